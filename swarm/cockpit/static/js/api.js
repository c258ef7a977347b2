// The node's JSON API, with the session's bearer token on every request.

/** A refusal or failure of the API: its HTTP status and the server's message (and field path). */
export class ApiError extends Error {
  constructor(status, message, path = null) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

/**
 * A client of the API under `base` (the page's own origin by default).
 * @param {() => string | null} token the current bearer token
 */
export function createApi(token, base = "") {
  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    const bearer = token();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(base + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, `the node did not answer (${err.message})`);
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = { error: text.slice(0, 200) }; }
    if (!response.ok) {
      throw new ApiError(response.status, data?.error ?? `HTTP ${response.status}`, data?.path ?? null);
    }
    return data;
  }
  return {
    get: (path) => call("GET", path),
    post: (path, body) => call("POST", path, body ?? {}),
    /** Path segments quoted for the URL. */
    path: (...parts) => parts.map((p) => encodeURIComponent(p)).join("/"),
  };
}
