// The node's event stream (WebSocket /api/v1/stream): run, node and device events as JSON frames.
// Reconnects with backoff; after a reconnect the caller reloads state over the JSON API, because events
// sent while it was away are gone.

/**
 * @param {() => string | null} token
 * @param {{onEvent: (event: object) => void, onStatus: (status: string) => void, onReconnect?: () => void}} handlers
 */
export function connectStream(token, handlers, win = window) {
  let socket = null;
  let delay = 500;
  let stopped = false;
  let opened = false;
  let timer = null;

  function open() {
    const bearer = token();
    if (!bearer || stopped) return;
    const scheme = win.location.protocol === "https:" ? "wss:" : "ws:";
    // A browser cannot set headers on a WebSocket: the API accepts the token in the query for this path
    // only, and its access log never records query strings.
    socket = new WebSocket(`${scheme}//${win.location.host}/api/v1/stream?token=${encodeURIComponent(bearer)}`);
    handlers.onStatus("connecting");
    socket.onopen = () => {
      delay = 500;
      handlers.onStatus("live");
      if (opened) handlers.onReconnect?.();
      opened = true;
    };
    socket.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      handlers.onEvent(event);
    };
    socket.onclose = (close) => {
      socket = null;
      if (stopped) return;
      handlers.onStatus(close.code === 1008 ? "token refused" : "offline");
      timer = win.setTimeout(open, delay);
      delay = Math.min(delay * 2, 8000);
    };
  }

  open();
  return {
    close() {
      stopped = true;
      win.clearTimeout(timer);
      socket?.close(1000);
    },
  };
}
