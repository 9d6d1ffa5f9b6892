/**
 * streamapp.js: a client for streamapp's multiplexed WebSocket endpoint (`ws/tasks/`) and its
 * task list (`GET /tasks/`), for browsers and Node (20.10+ with `--experimental-websocket`, or
 * any WebSocket class passed as the `WebSocket` option).
 *
 * A dependency-free ES module, no build step; its types are streamapp.d.ts, generated from the
 * JSDoc here (docs/client.md):
 *
 *   import { StreamClient } from "/static/streamapp/streamapp.js";
 *   const client = new StreamClient();                 // ws(s)://<this host>/ws/tasks/
 *   client.subscribe("demo.exampletask.7", {since: 0, onEvent, onState, onError});
 *   client.cancel("demo.exampletask.7");
 *   client.unsubscribe("demo.exampletask.7");
 *
 * The socket reconnects by itself and resubscribes every task with `since` = the last seq it
 * delivered, so the server replays exactly what was missed: at once after a service restart
 * (close 1012/4012), after a long pause when rate limited (4429), else with exponential backoff
 * and jitter. A socket that stops answering is given up after `pingInterval` + `pongTimeout`.
 * Events whose seq is not newer than the last one delivered are dropped: a handler never sees a
 * seq twice, whatever the server or the network repeats. The wire protocol is docs/protocol.md.
 */

/** @typedef {"pending" | "running" | "completed" | "failed" | "cancelled"} TaskStatus */
/** @typedef {{type: string, message: string}} TaskError */
/**
 * @typedef {object} StateFrame A task's status and position; the final one (completed, failed,
 *   cancelled) comes after its last event.
 * @property {"state"} type
 * @property {string} task the task key, `<app_label>.<model>.<pk>`
 * @property {TaskStatus} status
 * @property {number} seq the task's last event so far
 * @property {unknown} final_value what `process()` returned (completed tasks)
 * @property {TaskError | null} error why it failed or who cancelled it, when known
 */
/**
 * @typedef {object} EventFrame One event a task sent.
 * @property {"event"} type
 * @property {string} task
 * @property {number} seq 1, 2, 3 … per task, with no gaps
 * @property {string} event the event's name
 * @property {any} data
 * @property {string} ts ISO 8601 time it was sent
 */
/**
 * @typedef {"not_found" | "forbidden" | "bad_request" | "rate_limited" | "too_large"
 *   | "history_truncated"} ErrorCode
 */
/**
 * @typedef {object} ErrorFrame What the server refused, and why.
 * @property {"error"} type
 * @property {ErrorCode} code
 * @property {string} message
 * @property {string} [task] the task it is about, when it is about one
 * @property {number} [oldest_seq] with `history_truncated`: the oldest event the log still has
 */
/**
 * @typedef {object} SubscribeOptions
 * @property {number} [since] deliver every event after this seq (0: all); without it, the
 *   task's latest event only, then live ones
 * @property {(frame: EventFrame) => void} [onEvent]
 * @property {(frame: StateFrame) => void} [onState]
 * @property {(frame: ErrorFrame) => void} [onError]
 */
/** @typedef {"connecting" | "open" | "reconnecting" | "closed"} ConnectionStateName */
/**
 * @typedef {"lost" | "restart" | "rate_limited" | "unresponsive"} LossReason
 *   lost: the socket closed or could not open; restart: the server closed it for a restart
 *   (1012/4012); rate_limited: 4429; unresponsive: no answer to a ping within `pongTimeout`
 */
/**
 * @typedef {object} ConnectionDetail The `detail` of a `connectionstate` event.
 * @property {ConnectionStateName} state
 * @property {number} attempt reconnection attempts since the last open socket (0: none)
 * @property {number | null} delay ms until the next attempt (reconnecting only)
 * @property {number | null} retryAt when the next attempt starts, in `Date.now()` ms
 *   (reconnecting only): count down to it
 * @property {number | null} code the close code of the socket that was lost, if it closed
 * @property {LossReason | null} reason why the last socket was given up (null until one was)
 */
/**
 * @typedef {object} StorageLike Where `persist` keeps subscriptions: `sessionStorage`, or any
 *   object with the same three methods.
 * @property {(key: string) => string | null} getItem
 * @property {(key: string, value: string) => void} setItem
 * @property {(key: string) => void} removeItem
 */
/**
 * @typedef {object} ClientOptions
 * @property {number} [minDelay] ms before the first reconnect attempt (before jitter); 500
 * @property {number} [maxDelay] ms ceiling of the doubling backoff; 15000
 * @property {number} [rateLimitDelay] ms before reconnecting after close 4429, doubling for
 *   each 4429 in a row; 30000
 * @property {number} [maxRateLimitDelay] ms ceiling of that; 300000
 * @property {number} [pingInterval] ms without a frame before the client pings; 10000
 * @property {number} [pongTimeout] ms a ping may go unanswered before the socket is given up;
 *   5000
 * @property {"session" | StorageLike | null} [persist] keep subscribed keys and their last seqs
 *   across page loads: "session" uses `sessionStorage`; read them back from `client.persisted`
 * @property {string} [storageKey] the storage entry; `streamapp:<url>`
 * @property {typeof WebSocket} [WebSocket] the WebSocket class; the global one by default
 * @property {(detail: ConnectionDetail) => void} [onConnectionState]
 * @property {(frame: ErrorFrame) => void} [onError] errors about no subscribed task
 */
/** @typedef {{key: string, lastSeq: number | null}} PersistedSubscription */

/** The values of `client.connectionState`. */
export const ConnectionState = Object.freeze({
  CONNECTING: /** @type {"connecting"} */ ("connecting"), // a socket is opening
  OPEN: /** @type {"open"} */ ("open"), // subscribed and streaming
  RECONNECTING: /** @type {"reconnecting"} */ ("reconnecting"), // lost; waiting to try again
  CLOSED: /** @type {"closed"} */ ("closed"), // close() was called: nothing more happens
});

/** Close codes the server sends when it restarts (1012; 4012 where the server refuses 1012). */
export const RESTART_CODES = Object.freeze([1012, 4012]);
/** The close code of a rate-limited client. */
export const RATE_LIMITED_CODE = 4429;

/** Subscriptions the server refused for good: they are not retried on reconnect. */
const FATAL_CODES = new Set(["not_found", "forbidden"]);
/** A second restart close this soon after an immediate reconnect backs off instead (ms). */
const RESTART_WINDOW = 5000;
/** How long persisted positions may lag behind the stream before they are written (ms). */
const PERSIST_DELAY = 200;

const DEFAULTS = Object.freeze({
  minDelay: 500,
  maxDelay: 15000,
  rateLimitDelay: 30000,
  maxRateLimitDelay: 300000,
  pingInterval: 10000,
  pongTimeout: 5000,
});

/** The page's own URL for `path`, with `ws:`/`wss:` for sockets; needs a page (`location`). */
function pageUrl(path, websocket) {
  const location = globalThis.location;
  if (!location) throw new TypeError(`no page to resolve ${path} against: pass a full URL`);
  const url = new URL(path, location.href);
  if (websocket) url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/**
 * The `ws/tasks/` URL of the page's own host (`wss:` on an https page).
 * @param {string} [path]
 * @returns {string}
 */
export function defaultUrl(path = "/ws/tasks/") {
  return pageUrl(path, true);
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

/** Half fixed, half random ("equal jitter"): a restart is not met by every client at once. */
function jittered(ceiling) {
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/**
 * One multiplexed socket and every task subscribed over it.
 *
 * Dispatches `connectionstate` events (`event.detail` is a ConnectionDetail); the
 * `onConnectionState(detail)` option is a shortcut for listening to them. Protocol errors that
 * are about no subscribed task go to the `onError(frame)` option.
 */
export class StreamClient extends EventTarget {
  #url;
  #options;
  #WebSocket;
  /** @type {WebSocket | null} */
  #socket = null;
  #state = /** @type {ConnectionStateName} */ (ConnectionState.CLOSED);
  #attempt = 0; // reconnection attempts since the last open socket
  #rateLimited = 0; // 4429 closes in a row
  #immediateAt = -Infinity; // when a restart close last got an immediate reconnect
  /** @type {{code: number | null, reason: LossReason | null}} */
  #loss = { code: null, reason: null }; // why the last socket was given up
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #retryTimer = undefined;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #watchTimer = undefined;
  #heardAt = 0; // performance.now() of the last frame
  /** @type {number | null} */
  #pingedAt = null; // performance.now() of the last ping
  /** @type {Map<string, {handlers: SubscribeOptions, lastSeq: number | null}>} */
  #subscriptions = new Map();
  #outbox = []; // cancel actions waiting for an open socket
  /** @type {StorageLike | null} */
  #storage = null;
  #storageKey = "";
  /** @type {Map<string, number | null>} */
  #unclaimed = new Map(); // persisted subscriptions not subscribed again yet
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #persistTimer = undefined;
  #persisted = /** @type {ReadonlyArray<PersistedSubscription>} */ ([]);

  /**
   * @param {string} [url] the `ws/tasks/` endpoint; the page's own by default
   * @param {ClientOptions} [options]
   */
  constructor(url = defaultUrl(), options = {}) {
    super();
    this.#url = url;
    this.#options = { ...DEFAULTS, ...options };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket class: on Node 20 run with --experimental-websocket, " +
        "or pass one as the WebSocket option");
    }
    if (typeof options.onConnectionState === "function") {
      this.addEventListener("connectionstate", (event) =>
        notify(options.onConnectionState, /** @type {CustomEvent} */ (event).detail));
    }
    this.#openStorage(options.persist, options.storageKey ?? `streamapp:${url}`);
    this.#connect();
  }

  /** @returns {ConnectionStateName} one of ConnectionState's values */
  get connectionState() {
    return this.#state;
  }

  /**
   * Subscriptions a previous page with the same `persist` storage held, with the last seq it
   * delivered of each: subscribe to them again to resume (empty without `persist`).
   * @returns {ReadonlyArray<PersistedSubscription>}
   */
  get persisted() {
    return this.#persisted;
  }

  /**
   * The seq of the last event delivered for `key` (null before the first one).
   * @param {string} key
   * @returns {number | null}
   */
  lastSeq(key) {
    return this.#subscriptions.get(key)?.lastSeq ?? null;
  }

  /**
   * Watch a task. Handlers receive frames as the protocol defines them.
   * @param {string} key the task key, `<app_label>.<model>.<pk>`
   * @param {SubscribeOptions} [options]
   * @returns {() => void} a function that unsubscribes
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
    this.#unclaimed.delete(key);
    this.#persistSoon();
    if (this.#state === ConnectionState.OPEN) this.#sendSubscribe(key, subscription);
    return () => this.unsubscribe(key);
  }

  /**
   * Stop watching a task (it keeps running on the server); a persisted one is forgotten.
   * @param {string} key
   */
  unsubscribe(key) {
    this.#unclaimed.delete(key);
    this.#persistSoon();
    if (this.#subscriptions.delete(key) && this.#state === ConnectionState.OPEN) {
      this.#send({ action: "unsubscribe", task: key });
    }
  }

  /**
   * Ask the server to cancel a task; sent as soon as a socket is open.
   * @param {string} key
   */
  cancel(key) {
    const frame = { action: "cancel", task: key };
    if (this.#state === ConnectionState.OPEN) this.#send(frame);
    else this.#outbox.push(frame);
  }

  /** Close the socket for good; subscriptions end without further callbacks. */
  close() {
    clearTimeout(this.#retryTimer);
    this.#stopWatching();
    this.#persistNow();
    globalThis.removeEventListener?.("pagehide", this.#onPageHide);
    this.#setState(ConnectionState.CLOSED);
    const socket = this.#socket;
    this.#socket = null;
    socket?.close(1000);
  }

  // -- connection ------------------------------------------------------------------------------

  #connect() {
    const socket = new this.#WebSocket(this.#url);
    this.#socket = socket;
    this.#setState(ConnectionState.CONNECTING);
    socket.addEventListener("open", () => this.#opened(socket));
    socket.addEventListener("message", (event) => this.#received(socket, event.data));
    socket.addEventListener("close", (event) => this.#lost(socket, event.code, "lost"));
  }

  #opened(socket) {
    if (socket !== this.#socket) return;
    this.#attempt = 0;
    this.#loss = { code: null, reason: null };
    this.#setState(ConnectionState.OPEN);
    for (const [key, subscription] of this.#subscriptions) this.#sendSubscribe(key, subscription);
    for (const frame of this.#outbox.splice(0)) this.#send(frame);
    this.#heardAt = performance.now();
    this.#pingedAt = null;
    this.#watch();
  }

  /** Give up on `socket` (closed with `code`, or unresponsive) and plan the next attempt. */
  #lost(socket, code, reason) {
    if (socket !== this.#socket) return; // an old socket we already gave up on, or close()
    this.#socket = null;
    this.#stopWatching();
    if (code === RATE_LIMITED_CODE) {
      this.#loss = { code, reason: "rate_limited" };
      this.#retryIn(this.#rateLimitDelay());
    } else if (RESTART_CODES.includes(code) && performance.now() - this.#immediateAt > RESTART_WINDOW) {
      // The server is going away on purpose: another (or the same, restarted) is ready now.
      this.#immediateAt = performance.now();
      this.#loss = { code, reason: "restart" };
      this.#attempt += 1;
      this.#retryIn(0);
    } else {
      this.#loss = { code: code ?? null, reason: RESTART_CODES.includes(code) ? "restart" : reason };
      this.#attempt += 1;
      this.#retryIn(this.#backoffDelay());
    }
  }

  #backoffDelay() {
    const { minDelay, maxDelay } = this.#options;
    return jittered(Math.min(maxDelay, minDelay * 2 ** (this.#attempt - 1)));
  }

  #rateLimitDelay() {
    // Not a normal drop: the server asked us to go away for a while, so wait longer, and do
    // not let it speed up or slow down the ordinary backoff.
    const { rateLimitDelay, maxRateLimitDelay } = this.#options;
    this.#rateLimited += 1;
    return jittered(Math.min(maxRateLimitDelay, rateLimitDelay * 2 ** (this.#rateLimited - 1)));
  }

  #retryIn(delay) {
    this.#setState(ConnectionState.RECONNECTING, delay);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  // -- liveness --------------------------------------------------------------------------------

  /** Ping after `pingInterval` without a frame; give the socket up if nothing answers. */
  #watch() {
    clearTimeout(this.#watchTimer);
    const { pingInterval, pongTimeout } = this.#options;
    const now = performance.now();
    if (this.#pingedAt !== null && this.#heardAt < this.#pingedAt) {
      const waited = now - this.#pingedAt;
      if (waited >= pongTimeout) {
        // The connection is dead even if the browser has not noticed: give up on it now
        // rather than wait for TCP to time out.
        const socket = /** @type {WebSocket} */ (this.#socket);
        this.#lost(socket, null, "unresponsive");
        socket.close();
        return;
      }
      this.#watchTimer = setTimeout(() => this.#watch(), pongTimeout - waited);
      return;
    }
    const quiet = now - this.#heardAt;
    if (quiet >= pingInterval) {
      this.#pingedAt = now;
      this.#send({ action: "ping" });
      this.#watchTimer = setTimeout(() => this.#watch(), pongTimeout);
      return;
    }
    this.#watchTimer = setTimeout(() => this.#watch(), pingInterval - quiet);
  }

  #stopWatching() {
    clearTimeout(this.#watchTimer);
    this.#watchTimer = undefined;
  }

  #setState(state, delay = null) {
    this.#state = state;
    /** @type {ConnectionDetail} */
    const detail = {
      state,
      attempt: this.#attempt,
      delay,
      retryAt: delay === null ? null : Date.now() + delay,
      ...this.#loss,
    };
    this.dispatchEvent(new CustomEvent("connectionstate", { detail }));
  }

  #send(frame) {
    this.#socket?.send(JSON.stringify(frame));
  }

  #sendSubscribe(key, subscription) {
    /** @type {{action: string, task: string, since?: number}} */
    const frame = { action: "subscribe", task: key };
    if (subscription.lastSeq !== null) frame.since = subscription.lastSeq;
    this.#send(frame);
  }

  // -- frames from the server ------------------------------------------------------------------

  #received(socket, text) {
    if (socket !== this.#socket) return; // a socket given up on may still deliver: ignore it
    this.#heardAt = performance.now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // the protocol only sends JSON; nothing sensible to do with anything else
    }
    if (frame.type !== "error") this.#rateLimited = 0; // admitted and served
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
    this.#persistSoon();
    notify(subscription.handlers.onEvent, frame);
  }

  #deliverState(subscription, frame) {
    if (subscription.lastSeq === null) {
      // Subscribed without `since`: the server follows with the latest event (seq) only, so
      // position just before it; a later resubscribe then replays from there.
      subscription.lastSeq = Math.max(frame.seq - 1, 0);
      this.#persistSoon();
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
    if (FATAL_CODES.has(frame.code)) {
      this.#subscriptions.delete(frame.task);
      this.#persistSoon();
    }
    notify(subscription.handlers.onError ?? this.#options.onError, frame);
  }

  // -- persistence -----------------------------------------------------------------------------

  #openStorage(persist, storageKey) {
    if (persist === undefined || persist === null) return;
    const storage = persist === "session" ? globalThis.sessionStorage : persist;
    if (!storage || typeof storage.getItem !== "function" || typeof storage.setItem !== "function") {
      throw new TypeError(`persist must be "session" or a Storage-like object, got ${String(persist)}`);
    }
    this.#storage = storage;
    this.#storageKey = storageKey;
    let saved = {};
    try {
      saved = JSON.parse(storage.getItem(storageKey) ?? "{}")?.tasks ?? {};
    } catch {
      saved = {}; // written by something else: start afresh
    }
    for (const [key, lastSeq] of Object.entries(saved)) {
      if (lastSeq === null || Number.isSafeInteger(lastSeq)) this.#unclaimed.set(key, lastSeq);
    }
    this.#persisted = Object.freeze(
      [...this.#unclaimed].map(([key, lastSeq]) => Object.freeze({ key, lastSeq })));
    // A page being left (reload, navigation) writes what it delivered last.
    globalThis.addEventListener?.("pagehide", this.#onPageHide);
  }

  #onPageHide = () => this.#persistNow();

  #persistSoon() {
    if (this.#storage === null || this.#persistTimer !== undefined) return;
    this.#persistTimer = setTimeout(() => this.#persistNow(), PERSIST_DELAY);
  }

  #persistNow() {
    clearTimeout(this.#persistTimer);
    this.#persistTimer = undefined;
    if (this.#storage === null) return;
    const tasks = Object.fromEntries(this.#unclaimed);
    for (const [key, subscription] of this.#subscriptions) tasks[key] = subscription.lastSeq;
    try {
      if (Object.keys(tasks).length === 0) this.#storage.removeItem(this.#storageKey);
      else this.#storage.setItem(this.#storageKey, JSON.stringify({ tasks }));
    } catch (error) {
      notify(() => { throw error; }); // a full or refused storage must not stop the stream
    }
  }
}

// -- GET /tasks/ -----------------------------------------------------------------------------

/**
 * @typedef {StateFrame & {model: string, created_at: string}} ListedTask A task's state frame,
 *   its model's verbose name and its creation time.
 */
/** @typedef {{tasks: ListedTask[], next: string | null}} TaskPage */
/**
 * @typedef {object} ListOptions
 * @property {string} [endpoint] the list URL; the page's `/tasks/` by default
 * @property {string | null} [next] a page's `next` URL: the page after it (filters included)
 * @property {TaskStatus | TaskStatus[]} [status]
 * @property {string | string[]} [model] `app_label.model`
 * @property {Date | string} [createdAfter]
 * @property {number} [limit] 1 to 100; 20 by default
 * @property {Record<string, string>} [headers] e.g. `Authorization: Bearer …`
 * @property {RequestInit["signal"]} [signal]
 */

/** A refused `GET /tasks/`: `status` is the HTTP status, `frame` the server's error frame. */
export class TaskListError extends Error {
  /**
   * @param {number} status
   * @param {ErrorFrame | null} frame
   */
  constructor(status, frame) {
    super(frame?.message ?? `GET /tasks/ answered HTTP ${status}`);
    this.name = "TaskListError";
    this.status = status;
    this.frame = frame;
  }
}

/**
 * One page of the tasks the user may watch, newest first (`GET /tasks/`).
 * @param {ListOptions} [options]
 * @returns {Promise<TaskPage>}
 */
export async function listTasks({ endpoint, next, status, model, createdAfter, limit, headers, signal } = {}) {
  let url;
  if (next) {
    url = next;
  } else {
    const target = new URL(endpoint ?? pageUrl("/tasks/", false), globalThis.location?.href);
    for (const value of [status ?? []].flat()) target.searchParams.append("status", value);
    for (const value of [model ?? []].flat()) target.searchParams.append("model", value);
    if (createdAfter !== undefined) {
      const when = createdAfter instanceof Date ? createdAfter.toISOString() : String(createdAfter);
      target.searchParams.set("created_after", when);
    }
    if (limit !== undefined) target.searchParams.set("limit", String(limit));
    url = target.href;
  }
  const response = await fetch(url, {
    headers: { Accept: "application/json", ...headers }, credentials: "same-origin", signal,
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new TaskListError(response.status, body?.type === "error" ? body : null);
  return body;
}
