// The recording player: guacamole-common-js's SessionRecording, driven by our own clock so
// the speed can change (0.5x to 4x). The recording is fetched in ranges (progress as it
// comes), checked against the SHA-256 stored when the session ended, then played.
// It is fed to SessionRecording through a tunnel, not as a Blob: 1.5.0's Blob path reads a
// variable it never sets ("Cannot read properties of undefined (reading 'size')").
// Configuration comes from data attributes (no inline script: the CSP forbids it).
const player = document.getElementById("player");
const $ = (id) => document.getElementById(id);
const { default: Guacamole } = await import(player.dataset.guacamole);

const CHUNK = 4 * 1024 * 1024;
const playButton = $("play");
const seekBar = $("seek");
const speedSelect = $("speed");
const container = $("display");

function setStatus(text) { $("player-status").textContent = text; }
function setState(state) { player.dataset.state = state; }

// What the status line says in each state: it always matches what the player is doing.
function playingStatus() { return `Playing at ${speed}×. Press Pause to stop, drag the timeline to jump.`; }

function clock(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

async function download(src, onPart) {
  const parts = [];
  let offset = 0;
  let total = Number(player.dataset.size) || 0;
  for (;;) {
    const response = await fetch(src, {
      headers: { Range: `bytes=${offset}-${offset + CHUNK - 1}` }, credentials: "same-origin", cache: "no-store",
    });
    if (response.status === 416) break; // nothing (more) to read
    if (response.status === 200) { // the server sent the whole file at once
      const whole = await response.arrayBuffer();
      onPart(whole);
      return [whole];
    }
    if (response.status !== 206) throw new Error(`the server answered ${response.status}`);
    const whole = /\/(\d+)$/.exec(response.headers.get("Content-Range") || "");
    if (whole) total = Number(whole[1]);
    const part = await response.arrayBuffer();
    parts.push(part);
    onPart(part);
    offset += part.byteLength;
    setStatus(`Loading the recording… ${total ? Math.round((100 * offset) / total) : 100}%`);
    if (!part.byteLength || offset >= total) break;
  }
  return parts;
}

async function checkIntegrity(blob) {
  const expected = player.dataset.sha256;
  const note = $("player-integrity");
  if (!expected || !crypto.subtle) {
    note.textContent = "No digest was stored for this recording yet; its integrity is not checked.";
    return;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
  const actual = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  player.dataset.integrity = actual === expected ? "ok" : "mismatch";
  note.textContent = actual === expected
    ? "Integrity: the file matches the SHA-256 recorded when the session ended."
    : "Warning: the file does NOT match the SHA-256 recorded when the session ended.";
  note.classList.toggle("error", actual !== expected);
}

let recording;
let duration = 0;
let position = 0;
let playing = false;
let speed = 1;
let anchorPosition = 0;
let anchorTime = 0;
let generation = 0; // a newer seek makes the callbacks of older ones stale

function render() {
  seekBar.value = String(Math.round(position));
  $("position").textContent = `${clock(position)} / ${clock(duration)}`;
  playButton.textContent = playing ? "Pause" : "Play";
  player.dataset.position = String(Math.round(position));
}

function clockPosition() {
  return Math.min(duration, anchorPosition + (performance.now() - anchorTime) * speed);
}

function seekTo(target, then) {
  const mine = ++generation;
  recording.seek(target, () => {
    if (mine !== generation) return;
    position = target;
    render();
    if (then) then();
  });
}

function step() {
  if (!playing) return;
  const target = clockPosition();
  seekTo(target, () => {
    if (!playing) return;
    if (target >= duration) {
      playing = false;
      setState("ended");
      setStatus("The end of the recording. Press Play to watch it again.");
      render();
      return;
    }
    setTimeout(step, 40);
  });
}

function play() {
  if (position >= duration) position = 0;
  anchorPosition = position;
  anchorTime = performance.now();
  playing = true;
  setState("playing");
  setStatus(playingStatus());
  render();
  step();
}

function pause() {
  position = clockPosition();
  playing = false;
  generation++;
  setState("paused");
  setStatus(`Paused at ${clock(position)}. Press Play to go on.`);
  render();
}

function fit() {
  const display = recording.getDisplay();
  const width = display.getWidth();
  if (width) display.scale(Math.min(1, container.clientWidth / width));
}

playButton.addEventListener("click", () => (playing ? pause() : play()));
speedSelect.addEventListener("change", () => {
  if (playing) {
    anchorPosition = clockPosition();
    anchorTime = performance.now();
  }
  speed = Number(speedSelect.value) || 1;
  player.dataset.speed = String(speed);
  if (playing) setStatus(playingStatus());
});
seekBar.addEventListener("input", () => {
  position = Number(seekBar.value);
  if (playing) {
    anchorPosition = position;
    anchorTime = performance.now();
  } else {
    seekTo(position);
  }
});
window.addEventListener("resize", () => recording && fit());

setState("loading");
try {
  const tunnel = new Guacamole.Tunnel();
  recording = new Guacamole.SessionRecording(tunnel);
  const display = recording.getDisplay();
  container.appendChild(display.getElement());
  display.onresize = fit;
  recording.onerror = (message) => { setState("error"); setStatus(`The recording cannot be played: ${message}`); };
  recording.onload = () => {
    duration = recording.getDuration();
    seekBar.max = String(duration);
    seekBar.disabled = false;
    playButton.disabled = false;
    setState("ready");
    setStatus("Ready. Press Play, drag the timeline to jump, or pick a speed.");
    seekTo(0);
  };
  const parser = new Guacamole.Parser();
  parser.oninstruction = (opcode, args) => tunnel.oninstruction(opcode, args);
  const decoder = new TextDecoder(); // a block may end inside a UTF-8 character
  tunnel.setState(Guacamole.Tunnel.State.OPEN);
  const parts = await download(player.dataset.src, (part) => parser.receive(decoder.decode(part, { stream: true })));
  parser.receive(decoder.decode());
  const blob = new Blob(parts);
  if (!blob.size) throw new Error("the recording is empty");
  checkIntegrity(blob).catch((error) => { $("player-integrity").textContent = `Not checked: ${error.message}`; });
  tunnel.setState(Guacamole.Tunnel.State.CLOSED); // all there: SessionRecording fires onload
} catch (error) {
  setState("error");
  setStatus(`The recording could not be loaded: ${error.message}`);
}
