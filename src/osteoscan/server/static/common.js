// Shared helpers of the viewer pages: authenticated fetch, sign-in, formatting.
// Everything is served by the osteoscan service itself (no CDN: the box may have no internet).

export class Unauthorized extends Error {}

export async function api(path, options = {}) {
  const resp = await fetch(path, { credentials: "same-origin", ...options });
  if (resp.status === 401) throw new Unauthorized("sign in needed");
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    const err = new Error(`${resp.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    err.status = resp.status;
    throw err;
  }
  return resp;
}

export async function apiJson(path, options = {}) {
  return (await api(path, options)).json();
}

// Show the sign-in card; resolves once the token was accepted (the server sets an HttpOnly cookie).
export function signIn() {
  const card = document.getElementById("login");
  const app = document.getElementById("app");
  card.hidden = false;
  if (app) app.hidden = true;
  return new Promise((resolve) => {
    document.getElementById("login-form").onsubmit = async (ev) => {
      ev.preventDefault();
      const token = document.getElementById("token").value.trim();
      const resp = await fetch("/api/v1/session", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
      });
      if (resp.status === 204) {
        card.hidden = true;
        if (app) app.hidden = false;
        resolve();
      } else {
        document.getElementById("login-error").textContent = "wrong token";
      }
    };
  });
}

// Run fn(); on 401 ask for the token and try again.
export async function withAuth(fn) {
  for (;;) {
    try {
      document.getElementById("app").hidden = false;
      return await fn();
    } catch (e) {
      if (!(e instanceof Unauthorized)) throw e;
      await signIn();
    }
  }
}

export function fmt(x, digits = 0) {
  return x === null || x === undefined ? "\u2013" : Number(x).toFixed(digits);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

export async function showHealth() {
  const span = document.getElementById("health");
  try {
    const h = await (await fetch("/health")).json();
    span.textContent = `${h.status} \u00b7 ${h.workers_alive}/${h.workers_configured} worker(s)` +
      (h.dicom && h.dicom.listening ? ` \u00b7 DICOM ${h.dicom.ae_title}:${h.dicom.port}` : "");
    span.className = `health ${h.status}`;
  } catch (e) {
    span.textContent = "service unreachable";
    span.className = "health degraded";
  }
}
