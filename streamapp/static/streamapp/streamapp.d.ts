/**
 * The `ws/tasks/` URL of the page's own host (`wss:` on an https page).
 * @param {string} [path]
 * @returns {string}
 */
export function defaultUrl(path?: string): string;
/**
 * One page of the tasks the user may watch, newest first (`GET /tasks/`).
 * @param {ListOptions} [options]
 * @returns {Promise<TaskPage>}
 */
export function listTasks({ endpoint, next, status, model, createdAfter, limit, headers, signal }?: ListOptions): Promise<TaskPage>;
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
export const ConnectionState: Readonly<{
    CONNECTING: "connecting";
    OPEN: "open";
    RECONNECTING: "reconnecting";
    CLOSED: "closed";
}>;
/** Close codes the server sends when it restarts (1012; 4012 where the server refuses 1012). */
export const RESTART_CODES: readonly number[];
/** The close code of a rate-limited client. */
export const RATE_LIMITED_CODE: 4429;
/**
 * One multiplexed socket and every task subscribed over it.
 *
 * Dispatches `connectionstate` events (`event.detail` is a ConnectionDetail); the
 * `onConnectionState(detail)` option is a shortcut for listening to them. Protocol errors that
 * are about no subscribed task go to the `onError(frame)` option.
 */
export class StreamClient extends EventTarget {
    /**
     * @param {string} [url] the `ws/tasks/` endpoint; the page's own by default
     * @param {ClientOptions} [options]
     */
    constructor(url?: string, options?: ClientOptions);
    /** @returns {ConnectionStateName} one of ConnectionState's values */
    get connectionState(): ConnectionStateName;
    /**
     * Subscriptions a previous page with the same `persist` storage held, with the last seq it
     * delivered of each: subscribe to them again to resume (empty without `persist`).
     * @returns {ReadonlyArray<PersistedSubscription>}
     */
    get persisted(): ReadonlyArray<PersistedSubscription>;
    /**
     * The seq of the last event delivered for `key` (null before the first one).
     * @param {string} key
     * @returns {number | null}
     */
    lastSeq(key: string): number | null;
    /**
     * Watch a task. Handlers receive frames as the protocol defines them.
     * @param {string} key the task key, `<app_label>.<model>.<pk>`
     * @param {SubscribeOptions} [options]
     * @returns {() => void} a function that unsubscribes
     */
    subscribe(key: string, { since, onEvent, onState, onError }?: SubscribeOptions): () => void;
    /**
     * Stop watching a task (it keeps running on the server); a persisted one is forgotten.
     * @param {string} key
     */
    unsubscribe(key: string): void;
    /**
     * Ask the server to cancel a task; sent as soon as a socket is open.
     * @param {string} key
     */
    cancel(key: string): void;
    /** Close the socket for good; subscriptions end without further callbacks. */
    close(): void;
    #private;
}
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
    constructor(status: number, frame: ErrorFrame | null);
    status: number;
    frame: ErrorFrame | null;
}
export type TaskStatus = "pending" | "running" | "completed" | "failed" | "cancelled";
export type TaskError = {
    type: string;
    message: string;
};
/**
 * A task's status and position; the final one (completed, failed,
 *   cancelled) comes after its last event.
 */
export type StateFrame = {
    type: "state";
    /**
     * the task key, `<app_label>.<model>.<pk>`
     */
    task: string;
    status: TaskStatus;
    /**
     * the task's last event so far
     */
    seq: number;
    /**
     * what `process()` returned (completed tasks)
     */
    final_value: unknown;
    /**
     * why it failed or who cancelled it, when known
     */
    error: TaskError | null;
};
/**
 * One event a task sent.
 */
export type EventFrame = {
    type: "event";
    task: string;
    /**
     * 1, 2, 3 … per task, with no gaps
     */
    seq: number;
    /**
     * the event's name
     */
    event: string;
    data: any;
    /**
     * ISO 8601 time it was sent
     */
    ts: string;
};
export type ErrorCode = "not_found" | "forbidden" | "bad_request" | "rate_limited" | "too_large" | "history_truncated";
/**
 * What the server refused, and why.
 */
export type ErrorFrame = {
    type: "error";
    code: ErrorCode;
    message: string;
    /**
     * the task it is about, when it is about one
     */
    task?: string | undefined;
    /**
     * with `history_truncated`: the oldest event the log still has
     */
    oldest_seq?: number | undefined;
};
export type SubscribeOptions = {
    /**
     * deliver every event after this seq (0: all); without it, the
     * task's latest event only, then live ones
     */
    since?: number | undefined;
    onEvent?: ((frame: EventFrame) => void) | undefined;
    onState?: ((frame: StateFrame) => void) | undefined;
    onError?: ((frame: ErrorFrame) => void) | undefined;
};
export type ConnectionStateName = "connecting" | "open" | "reconnecting" | "closed";
/**
 * lost: the socket closed or could not open; restart: the server closed it for a restart
 * (1012/4012); rate_limited: 4429; unresponsive: no answer to a ping within `pongTimeout`
 */
export type LossReason = "lost" | "restart" | "rate_limited" | "unresponsive";
/**
 * The `detail` of a `connectionstate` event.
 */
export type ConnectionDetail = {
    state: ConnectionStateName;
    /**
     * reconnection attempts since the last open socket (0: none)
     */
    attempt: number;
    /**
     * ms until the next attempt (reconnecting only)
     */
    delay: number | null;
    /**
     * when the next attempt starts, in `Date.now()` ms
     * (reconnecting only): count down to it
     */
    retryAt: number | null;
    /**
     * the close code of the socket that was lost, if it closed
     */
    code: number | null;
    /**
     * why the last socket was given up (null until one was)
     */
    reason: LossReason | null;
};
/**
 * Where `persist` keeps subscriptions: `sessionStorage`, or any
 *   object with the same three methods.
 */
export type StorageLike = {
    getItem: (key: string) => string | null;
    setItem: (key: string, value: string) => void;
    removeItem: (key: string) => void;
};
export type ClientOptions = {
    /**
     * ms before the first reconnect attempt (before jitter); 500
     */
    minDelay?: number | undefined;
    /**
     * ms ceiling of the doubling backoff; 15000
     */
    maxDelay?: number | undefined;
    /**
     * ms before reconnecting after close 4429, doubling for
     * each 4429 in a row; 30000
     */
    rateLimitDelay?: number | undefined;
    /**
     * ms ceiling of that; 300000
     */
    maxRateLimitDelay?: number | undefined;
    /**
     * ms without a frame before the client pings; 10000
     */
    pingInterval?: number | undefined;
    /**
     * ms a ping may go unanswered before the socket is given up;
     * 5000
     */
    pongTimeout?: number | undefined;
    /**
     * keep subscribed keys and their last seqs
     * across page loads: "session" uses `sessionStorage`; read them back from `client.persisted`
     */
    persist?: "session" | StorageLike | null | undefined;
    /**
     * the storage entry; `streamapp:<url>`
     */
    storageKey?: string | undefined;
    /**
     * the WebSocket class; the global one by default
     */
    WebSocket?: {
        new (url: string | URL, protocols?: string | string[]): WebSocket;
        prototype: WebSocket;
        readonly CONNECTING: 0;
        readonly OPEN: 1;
        readonly CLOSING: 2;
        readonly CLOSED: 3;
    } | undefined;
    onConnectionState?: ((detail: ConnectionDetail) => void) | undefined;
    /**
     * errors about no subscribed task
     */
    onError?: ((frame: ErrorFrame) => void) | undefined;
};
export type PersistedSubscription = {
    key: string;
    lastSeq: number | null;
};
/**
 * A task's state frame,
 *   its model's verbose name and its creation time.
 */
export type ListedTask = StateFrame & {
    model: string;
    created_at: string;
};
export type TaskPage = {
    tasks: ListedTask[];
    next: string | null;
};
export type ListOptions = {
    /**
     * the list URL; the page's `/tasks/` by default
     */
    endpoint?: string | undefined;
    /**
     * a page's `next` URL: the page after it (filters included)
     */
    next?: string | null | undefined;
    status?: TaskStatus | TaskStatus[] | undefined;
    /**
     * `app_label.model`
     */
    model?: string | string[] | undefined;
    createdAfter?: string | Date | undefined;
    /**
     * 1 to 100; 20 by default
     */
    limit?: number | undefined;
    /**
     * e.g. `Authorization: Bearer …`
     */
    headers?: Record<string, string> | undefined;
    signal?: RequestInit["signal"];
};
