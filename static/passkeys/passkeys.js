// Passkeys (WebAuthn) in the browser: the portal's pages mark a widget with data-passkey="..."
// and this module runs its ceremony: POST data-options-url for the options, call the
// authenticator, POST the answer to data-finish-url, then follow {"location"} or show {"error"}.
// A static file (the CSP forbids inline scripts); no library.

const b64url = {
  decode(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)).buffer;
  },
  encode(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

function creationOptions(json) {
  return {
    ...json,
    challenge: b64url.decode(json.challenge),
    user: { ...json.user, id: b64url.decode(json.user.id) },
    excludeCredentials: (json.excludeCredentials || []).map((c) => ({ ...c, id: b64url.decode(c.id) })),
  };
}

function requestOptions(json) {
  return {
    ...json,
    challenge: b64url.decode(json.challenge),
    allowCredentials: (json.allowCredentials || []).map((c) => ({ ...c, id: b64url.decode(c.id) })),
  };
}

function credentialJSON(credential) {
  const r = credential.response;
  const response = { clientDataJSON: b64url.encode(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = b64url.encode(r.attestationObject);
    response.transports = r.getTransports ? r.getTransports() : [];
  } else {
    response.authenticatorData = b64url.encode(r.authenticatorData);
    response.signature = b64url.encode(r.signature);
    if (r.userHandle) response.userHandle = b64url.encode(r.userHandle);
  }
  return {
    id: credential.id, rawId: b64url.encode(credential.rawId), type: credential.type, response,
    clientExtensionResults: credential.getClientExtensionResults(),
    authenticatorAttachment: credential.authenticatorAttachment,
  };
}

async function post(widget, url, body) {
  const token = widget.querySelector("input[name=csrfmiddlewaretoken]").value;
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": token, Accept: "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: "The portal did not answer. Try again." }));
  if (!response.ok && data.location) window.location.assign(data.location);
  if (!response.ok) throw new Error(data.error || "That did not work. Try again.");
  return data;
}

function say(widget, message) {
  const line = widget.querySelector("[data-passkey-error]");
  line.textContent = message;
  line.hidden = !message;
}

function extra(widget) {
  const body = {};
  for (const field of ["next", "challenge"]) {
    if (widget.dataset[field] !== undefined) body[field] = widget.dataset[field];
  }
  const name = widget.querySelector("input[name=passkey_name]");
  if (name) body.name = name.value;
  return body;
}

async function run(widget, mediation) {
  const body = extra(widget);
  const options = await post(widget, widget.dataset.optionsUrl, body);
  // One ceremony at a time: a button press ends the autofill request still waiting.
  if (widget.abortCeremony) widget.abortCeremony.abort();
  const controller = new AbortController();
  widget.abortCeremony = controller;
  let credential;
  if (widget.dataset.passkey === "register") {
    credential = await navigator.credentials.create({ publicKey: creationOptions(options), signal: controller.signal });
  } else {
    const request = { publicKey: requestOptions(options), signal: controller.signal };
    if (mediation) request.mediation = mediation;
    credential = await navigator.credentials.get(request);
  }
  if (!credential) return;
  const done = await post(widget, widget.dataset.finishUrl, { ...body, credential: credentialJSON(credential) });
  window.location.assign(done.location);
}

function start(widget, mediation) {
  say(widget, "");
  widget.dataset.state = "busy";
  return run(widget, mediation)
    .catch((error) => {
      if (error.name === "AbortError") return;
      say(widget, error.name === "NotAllowedError"
        ? "The passkey was not used (cancelled or timed out). Try again."
        : error.message);
    })
    .finally(() => { widget.dataset.state = "ready"; });
}

for (const widget of document.querySelectorAll("[data-passkey]")) {
  if (!window.PublicKeyCredential) {
    say(widget, "This browser cannot use passkeys.");
    continue;
  }
  const button = widget.querySelector("[data-passkey-start]");
  if (button) button.addEventListener("click", () => start(widget));
  widget.dataset.state = "ready";
  // Sign-in: offer saved passkeys in the username field's autofill where the browser can.
  if (widget.dataset.passkey === "signin" && PublicKeyCredential.isConditionalMediationAvailable) {
    PublicKeyCredential.isConditionalMediationAvailable().then((available) => {
      if (available && widget.dataset.conditional !== "off") start(widget, "conditional");
    });
  }
}

// The desktop page's in-session step-up runs its own ceremony with these (static/desktop/desktop.js).
export { credentialJSON, requestOptions };
