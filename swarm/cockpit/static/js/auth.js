// The session's token: from the URL fragment (`swarm cockpit` puts it there; a fragment is never sent to
// the server), else the login form; kept in sessionStorage, so it lives as long as the tab.

const KEY = "swarm.token";

/** Take `#token=...` out of the address bar into the session; the token now held (or null). */
export function takeToken(win = window) {
  const fragment = new URLSearchParams(win.location.hash.replace(/^#/, ""));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    win.sessionStorage.setItem(KEY, fromUrl.trim());
    fragment.delete("token");
    const rest = fragment.toString();
    win.history.replaceState(null, "", win.location.pathname + win.location.search + (rest ? `#${rest}` : ""));
  }
  return win.sessionStorage.getItem(KEY);
}

export function storeToken(token, win = window) { win.sessionStorage.setItem(KEY, token.trim()); }

export function forgetToken(win = window) { win.sessionStorage.removeItem(KEY); }

/**
 * Who a token says it is (`{id, role}`), read from the token itself (`swarm1:` + base64url of zlib JSON).
 * A hint for the interface only (which buttons to enable): the server decides every request.
 */
export async function tokenIdentity(token) {
  try {
    if (!token.startsWith("swarm1:")) return null;
    const b64 = token.slice(7).replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    const data = JSON.parse(await new Response(stream).text());
    const cert = data.cert ?? data;
    return { id: String(cert.id ?? ""), role: String(cert.role ?? "") };
  } catch {
    return null;
  }
}

/** Whether a role may start runs (submitter and above; the server checks again). */
export function canSubmit(role) {
  return role === null || role === undefined || ["submitter", "operator", "admin"].includes(role);
}
