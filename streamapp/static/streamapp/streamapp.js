/**
 * streamapp.js: a browser client for streamapp's multiplexed WebSocket endpoint (`ws/tasks/`).
 *
 * A dependency-free ES module, no build step:
 *
 *   import { StreamClient } from "/static/streamapp/streamapp.js";
 *   const client = new StreamClient();                 // ws(s)://<this host>/ws/tasks/
 *   client.subscribe("demo.exampletask.7", {since: 0, onEvent, onState, onError});
 *   client.cancel("demo.exampletask.7");
 *   client.unsubscribe("demo.exampletask.7");
 *
 * The socket reconnects by itself, with exponential backoff and jitter, and resubscribes every
 * task with `since` = the last seq it delivered, so the server replays exactly what was missed.
 * Events whose seq is not newer than the last one delivered are dropped: a handler never sees a
 * seq twice, whatever the server or the network repeats. The wire protocol is docs/protocol.md.
 */

/** The values of `client.connectionState`. */
export const ConnectionState = Object.freeze({
  CONNECTING: "connecting", // a socket is opening
  OPEN: "open", // subscribed and streaming
  RECONNECTING: "reconnecting", // the socket was lost; the next attempt waits out its backoff
  CLOSED: "closed", // close() was called: nothing more happens
});

/** Subscriptions the server refused for good: they are not retried on reconnect. */
const FATAL_CODES = new Set(["not_found", "forbidden"]);

const DEFAULTS = Object.freeze({
  minDelay: 500, // ms before the first reconnect attempt (before jitter)
  maxDelay: 15000, // ms ceiling of the doubling backoff
  pingInterval: 25000, // ms between liveness pings; a socket silent for a whole interval is dropped
});

/** The `ws/tasks/` URL of the page's own host (`wss:` on an https page). */
export function defaultUrl(path = "/ws/tasks/") {
  const scheme = globalThis.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${globalThis.location.host}${path}`;
}

/** Call a user handler without letting its exception break the client. */
function notify(handler, ...args) {
  if (typeof handler !== "function") return;
  try {
    handler(...args);
  } catch (error) {
    if (typeof globalThis.reportError === "function") globalThis.reportError(error);
    else console.error(error);
  }
}

/**
 * One multiplexed socket and every task subscribed over it.
 *
 * Dispatches `connectionstate` events (`event.detail` = {state, attempt, delay}); the
 * `onConnectionState(detail)` option is a shortcut for listening to them. Protocol errors that
 * are about no subscribed task go to the `onError(frame)` option.
 */
export class StreamClient extends EventTarget {
  #url;
  #options;
  #socket = null;
  #state = ConnectionState.CLOSED;
  #attempt = 0; // failed connection attempts since the last open socket
  #retryTimer = null;
  #pingTimer = null;
  #heard = false; // a frame arrived since the last ping
  #subscriptions = new Map(); // key -> {handlers, lastSeq}
  #outbox = []; // cancel actions waiting for an open socket

  constructor(url = defaultUrl(), options = {}) {
    super();
    this.#url = url;
    this.#options = { ...DEFAULTS, ...options };
    if (typeof options.onConnectionState === "function") {
      this.addEventListener("connectionstate", (event) => notify(options.onConnectionState, event.detail));
    }
    this.#connect();
  }

  /** One of ConnectionState's values. */
  get connectionState() {
    return this.#state;
  }

  /** The seq of the last event delivered for `key` (null before the first one). */
  lastSeq(key) {
    return this.#subscriptions.get(key)?.lastSeq ?? null;
  }

  /**
   * Watch a task. `since`: deliver every event after that seq (0: from the start); without it
   * the server sends the task's latest event only, then live ones. Handlers receive frames as the
   * protocol defines them: onEvent({seq, event, data, ts, task}), onState({status, seq,
   * final_value, error, task}), onError({code, message, task, ...}).
   * Returns a function that unsubscribes.
   */
  subscribe(key, { since, onEvent, onState, onError } = {}) {
    if (typeof key !== "string" || key === "") {
      throw new TypeError(`a task key is a string like "app.model.pk", got ${String(key)}`);
    }
    if (since !== undefined && !(Number.isSafeInteger(since) && since >= 0)) {
      throw new TypeError(`since must be a whole number >= 0, got ${String(since)}`);
    }
    const subscription = { handlers: { onEvent, onState, onError }, lastSeq: since ?? null };
    this.#subscriptions.set(key, subscription);
    if (this.#state === ConnectionState.OPEN) this.#sendSubscribe(key, subscription);
    return () => this.unsubscribe(key);
  }

  /** Stop watching a task (it keeps running on the server). */
  unsubscribe(key) {
    if (this.#subscriptions.delete(key) && this.#state === ConnectionState.OPEN) {
      this.#send({ action: "unsubscribe", task: key });
    }
  }

  /** Ask the server to cancel a task; sent as soon as a socket is open. */
  cancel(key) {
    const frame = { action: "cancel", task: key };
    if (this.#state === ConnectionState.OPEN) this.#send(frame);
    else this.#outbox.push(frame);
  }

  /** Close the socket for good; subscriptions end without further callbacks. */
  close() {
    clearTimeout(this.#retryTimer);
    this.#stopPinging();
    this.#setState(ConnectionState.CLOSED);
    const socket = this.#socket;
    this.#socket = null;
    socket?.close(1000);
  }

  // -- connection ------------------------------------------------------------------------------

  #connect() {
    const socket = new WebSocket(this.#url);
    this.#socket = socket;
    this.#setState(ConnectionState.CONNECTING);
    socket.addEventListener("open", () => this.#opened(socket));
    socket.addEventListener("message", (event) => this.#received(event.data));
    socket.addEventListener("close", () => this.#lost(socket));
  }

  #opened(socket) {
    if (socket !== this.#socket) return;
    this.#attempt = 0;
    this.#setState(ConnectionState.OPEN);
    for (const [key, subscription] of this.#subscriptions) this.#sendSubscribe(key, subscription);
    for (const frame of this.#outbox.splice(0)) this.#send(frame);
    this.#startPinging();
  }

  #lost(socket) {
    if (socket !== this.#socket) return; // an old socket we already gave up on, or close()
    this.#socket = null;
    this.#stopPinging();
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    // "Equal jitter": half the doubled delay is fixed, half random, so a server restart is not
    // met by every page of a site at the same instant.
    const ceiling = Math.min(this.#options.maxDelay, this.#options.minDelay * 2 ** this.#attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.#attempt += 1;
    this.#setState(ConnectionState.RECONNECTING, delay);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #startPinging() {
    this.#heard = true;
    this.#pingTimer = setInterval(() => {
      if (!this.#heard) {
        // Silent for a whole interval: the connection is dead even if the browser has not
        // noticed. Give up on it now rather than wait for TCP to time out.
        const socket = this.#socket;
        this.#lost(socket);
        socket.close();
        return;
      }
      this.#heard = false;
      this.#send({ action: "ping" });
    }, this.#options.pingInterval);
  }

  #stopPinging() {
    clearInterval(this.#pingTimer);
    this.#pingTimer = null;
  }

  #setState(state, delay = null) {
    this.#state = state;
    const detail = { state, attempt: this.#attempt, delay };
    this.dispatchEvent(new CustomEvent("connectionstate", { detail }));
  }

  #send(frame) {
    this.#socket.send(JSON.stringify(frame));
  }

  #sendSubscribe(key, subscription) {
    const frame = { action: "subscribe", task: key };
    if (subscription.lastSeq !== null) frame.since = subscription.lastSeq;
    this.#send(frame);
  }

  // -- frames from the server ------------------------------------------------------------------

  #received(text) {
    this.#heard = true;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // the protocol only sends JSON; nothing sensible to do with anything else
    }
    const subscription = typeof frame.task === "string" ? this.#subscriptions.get(frame.task) : undefined;
    if (frame.type === "event") {
      if (subscription) this.#deliverEvent(subscription, frame);
    } else if (frame.type === "state") {
      if (subscription) this.#deliverState(subscription, frame);
    } else if (frame.type === "error") {
      this.#deliverError(subscription, frame);
    }
  }

  #deliverEvent(subscription, frame) {
    if (subscription.lastSeq !== null && frame.seq <= subscription.lastSeq) return; // seen it
    subscription.lastSeq = frame.seq;
    notify(subscription.handlers.onEvent, frame);
  }

  #deliverState(subscription, frame) {
    if (subscription.lastSeq === null) {
      // Subscribed without `since`: the server follows with the latest event (seq) only, so
      // position just before it; a later resubscribe then replays from there.
      subscription.lastSeq = Math.max(frame.seq - 1, 0);
    }
    notify(subscription.handlers.onState, frame);
  }

  #deliverError(subscription, frame) {
    if (!subscription) {
      notify(this.#options.onError, frame);
      return;
    }
    if (frame.code === "history_truncated" && Number.isSafeInteger(frame.oldest_seq)) {
      // Events before oldest_seq are gone for good; the ones from there on follow.
      subscription.lastSeq = Math.max(subscription.lastSeq ?? 0, frame.oldest_seq - 1);
    }
    if (FATAL_CODES.has(frame.code)) this.#subscriptions.delete(frame.task);
    notify(subscription.handlers.onError ?? this.#options.onError, frame);
  }
}
