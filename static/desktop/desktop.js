// The desktop page: guacamole-common-js full-window, a status bar, and a clear end message.
// Configuration comes from data attributes (no inline script: the CSP forbids it).
const body = document.body;
const $ = (id) => document.getElementById(id);
const { default: Guacamole } = await import(body.dataset.guacamole);

const screen = $("screen");
const ticket = body.dataset.ticket;
delete body.dataset.ticket; // one-time: nothing keeps it once the tunnel has it
const watching = Boolean(body.dataset.watching); // an admin's read-only view: no input at all
let ended = false;
let endsAt = null;
let countdown = null;

function setState(text) { $("state").textContent = text; }

function showNotice(text, kind = "info") {
  const el = $("notice");
  el.textContent = text;
  el.className = `notice notice-${kind}`;
  el.hidden = !text;
}

// Once the session is over the status bar says so and offers nothing live: the countdown
// stops and clears, and Disconnect goes away.
function showEnd(message, title = "The session ended", state = "Ended") {
  if (ended) return;
  ended = true;
  clearInterval(countdown);
  endsAt = null;
  setState(state);
  $("time-left").textContent = "";
  $("disconnect").hidden = true;
  $("ended-title").textContent = title;
  $("ended-message").textContent = message;
  $("ended").hidden = false;
  screen.hidden = true;
  if ($("step-up").open) $("step-up").close();
  body.dataset.ended = "true";
}

const tunnel = new Guacamole.WebSocketTunnel(body.dataset.tunnel);
const client = new Guacamole.Client(tunnel);
const display = client.getDisplay();
screen.appendChild(display.getElement());

// Portal instructions ride on the tunnel; the client library ignores unknown opcodes,
// so handle ours before handing everything on.
const handleInstruction = tunnel.oninstruction;
tunnel.oninstruction = (opcode, args) => {
  if (opcode === "portal") onPortal(args[0], JSON.parse(args[1] || "{}"));
  else handleInstruction(opcode, args);
};

function onPortal(kind, data) {
  if (kind === "status") {
    if (data.ends_in) endsAt = Date.now() + data.ends_in * 1000;
    if (data.watermark) drawWatermark(data.watermark);
  } else if (kind === "warning") {
    showNotice(data.message, "warning");
  } else if (kind === "step_up" || kind === "step_up_for_control") {
    askForCode(data.message, data.grace_seconds, kind === "step_up", kind === "step_up" ? "desktop.continue" : data.control);
  } else if (kind === "resumed") {
    showNotice("");
    if ($("step-up").open) $("step-up").close();
    setState("Connected");
  } else if (kind === "ended") {
    showEnd(data.message);
  }
}

client.onstatechange = (state) => {
  const names = { 0: "Idle", 1: "Connecting…", 2: "Waiting…", 3: "Connected", 4: "Disconnecting…", 5: "Disconnected" };
  if (!ended) setState(names[state] || "");
  body.dataset.clientState = String(state);
  if (state === 5 && !ended) showEnd("The connection was closed.");
};
client.onerror = (status) => showEnd(status.message || "The desktop could not be reached.");
tunnel.onerror = (status) => showEnd(status.message || "The connection to the portal was lost.");

// Keyboard, mouse, touch. Input goes to the desktop only while the page has focus.
// A watcher gets none of them (the relay would drop their input anyway).
if (!watching) {
  const keyboard = new Guacamole.Keyboard(document);
  keyboard.onkeydown = (keysym) => { if (!$("step-up").open && !ended) client.sendKeyEvent(1, keysym); return !$("step-up").open; };
  keyboard.onkeyup = (keysym) => { if (!$("step-up").open && !ended) client.sendKeyEvent(0, keysym); };
  const mouse = new Guacamole.Mouse(display.getElement());
  mouse.onEach(["mousedown", "mouseup", "mousemove"], (e) => client.sendMouseState(e.state, true));
  const touch = new Guacamole.Mouse.Touchscreen(display.getElement());
  touch.onEach(["mousedown", "mouseup", "mousemove"], (e) => client.sendMouseState(e.state, true));
}

function fit() {
  const width = screen.clientWidth, height = screen.clientHeight;
  if (!watching) client.sendSize(width, height); // the watched user's screen size stays theirs
  const w = display.getWidth(), h = display.getHeight();
  if (w && h) display.scale(Math.min(width / w, height / h, 1));
}
display.onresize = fit;
window.addEventListener("resize", fit);

// The end is shown first: disconnecting fires the client's "disconnected" state at once,
// which would otherwise say "The connection was closed."
$("disconnect").addEventListener("click", () => {
  showEnd("You disconnected. The session is closed.", "You disconnected", "You disconnected");
  client.disconnect();
});
window.addEventListener("pagehide", () => client.disconnect());

countdown = setInterval(() => {
  if (!endsAt || ended) return;
  const left = Math.max(0, Math.round((endsAt - Date.now()) / 1000));
  const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
  $("time-left").textContent = `${h ? h + " h " : ""}${m} min ${String(s).padStart(2, "0")} s left`;
}, 1000);

function drawWatermark(text) {
  const el = $("watermark");
  if (!el) return;
  const stamp = () => { el.textContent = `${text} · ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC `.repeat(60); };
  stamp();
  setInterval(stamp, 30000);
}

// The dialog offers what counts for the action the tunnel asked about: going on is a read
// action, a clipboard or file stream a sensitive one; the page says per class whether codes
// count (data-refuse-codes-*: the sentence refusing them, empty where they count).
function askForCode(message, grace, holdsInput, action = "desktop.continue") {
  const refusal = action === "desktop.continue" ? body.dataset.refuseCodesRead : body.dataset.refuseCodesSensitive;
  const hasPasskey = Boolean(body.dataset.hasPasskey);
  const codes = !refusal;
  $("step-up-action").value = action;
  $("step-up-reason").textContent = message + (holdsInput ? " Your input is paused until then." : "");
  $("step-up-error").hidden = true;
  $("codes-do-not-count").textContent = refusal || "";
  $("codes-do-not-count").hidden = codes;
  $("no-passkey").hidden = codes || hasPasskey;
  $("step-up-with-passkey").hidden = !hasPasskey;
  $("step-up-code").hidden = !codes;
  $("otp_token").disabled = !codes;
  $("confirm-code").classList.toggle("primary", !hasPasskey);
  $("step-up-deadline").textContent = grace ? `Without a confirmation the session ends in ${grace} seconds.` : "";
  if (holdsInput) setState(codes ? "Paused: code needed" : "Paused: passkey needed");
  if (!$("step-up").open) $("step-up").showModal();
  $("otp_token").value = "";
  if (codes) $("otp_token").focus(); else $("use-passkey").focus();
}

function stepUpFailed(message) {
  $("step-up-error").textContent = message;
  $("step-up-error").hidden = false;
}

function confirmed(message) {
  $("step-up").close();
  showNotice(message, "info");
}

$("step-up-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch(body.dataset.stepUp, {
    method: "POST", body: new FormData(event.target), credentials: "same-origin",
    headers: { "X-Requested-With": "fetch" },
  });
  const result = await response.json().catch(() => ({ ok: false, error: "The portal did not answer." }));
  if (result.ok) confirmed("Code accepted.");
  else stepUpFailed(result.error);
});

// A passkey ceremony bound to this session and the action asked about: the options (their
// challenge derived from both), the authenticator, then the answer to the same endpoint.
async function postStepUp(payload) {
  const token = document.querySelector("#step-up-form input[name=csrfmiddlewaretoken]").value;
  const response = await fetch(body.dataset.stepUp, {
    method: "POST", credentials: "same-origin", body: JSON.stringify(payload),
    headers: { "Content-Type": "application/json", "X-CSRFToken": token, Accept: "application/json" },
  });
  const data = await response.json().catch(() => ({ error: "The portal did not answer. Try again." }));
  if (!response.ok) throw new Error(data.error || "That did not work. Try again.");
  return data;
}

$("use-passkey")?.addEventListener("click", async () => {
  const action = $("step-up-action").value;
  $("step-up-error").hidden = true;
  $("use-passkey").disabled = true;
  try {
    const { requestOptions, credentialJSON } = await import(body.dataset.passkeys);
    const options = await postStepUp({ step: "options", action });
    const credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
    if (!credential) return;
    await postStepUp({ action, credential: credentialJSON(credential) });
    confirmed("Passkey accepted.");
  } catch (error) {
    stepUpFailed(error.name === "NotAllowedError"
      ? "The passkey was not used (cancelled or timed out). Try again." : error.message);
  } finally {
    $("use-passkey").disabled = false;
  }
});

const dpi = Math.round(96 * (window.devicePixelRatio || 1));
client.connect(new URLSearchParams({ ticket, width: screen.clientWidth, height: screen.clientHeight, dpi }).toString());
screen.focus();
