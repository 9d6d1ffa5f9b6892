// StreamClient against a real daphne (demo settings), over Node's own WebSocket.
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import { ConnectionState, StreamClient } from "streamapp";

import { MemoryStorage, Proxy, SOCKET_URL, Waiter, createTask } from "../support.js";

const clients = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

/** A client whose every callback is recorded in `seen`; `waiter` wakes on each one. */
function record(url = SOCKET_URL, options = {}) {
  const waiter = new Waiter();
  const seen = { events: [], states: [], errors: [], connection: [] };
  const client = new StreamClient(url, {
    minDelay: 50,
    maxDelay: 200,
    ...options,
    onConnectionState: (detail) => { seen.connection.push(detail); waiter.changed(); },
    onError: (frame) => { seen.errors.push(frame); waiter.changed(); },
  });
  clients.push(client);
  const watch = (key, since) => client.subscribe(key, {
    since,
    onEvent: (frame) => { seen.events.push(frame); waiter.changed(); },
    onState: (frame) => { seen.states.push(frame); waiter.changed(); },
    onError: (frame) => { seen.errors.push(frame); waiter.changed(); },
  });
  const ended = () => ["completed", "failed", "cancelled"].includes(seen.states.at(-1)?.status);
  return { client, seen, waiter, watch, ended };
}

const seqs = (seen) => seen.events.map((frame) => frame.seq);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("against daphne", () => {
  test("streams a task from its first event to its final state, every seq once", async () => {
    const key = await createTask("example", { message: "node", steps: 5, delay: 0.01 });
    const { seen, waiter, watch, ended } = record();
    watch(key, 0);
    await waiter.until(ended, "the final state");

    assert.deepEqual(seqs(seen), range(1, 7));
    assert.deepEqual(seen.events.map((frame) => frame.event),
      ["start", "progress", "progress", "progress", "progress", "progress", "complete"]);
    const final = seen.states.at(-1);
    assert.equal(final.status, "completed");
    assert.equal(final.final_value, "Completed processing: node");
    assert.equal(final.seq, 7);
    assert.equal(seen.connection[0].state, ConnectionState.CONNECTING);
    assert.equal(seen.connection[1].state, ConnectionState.OPEN);
  });

  test("a socket cut mid-task resumes with since: no event missing, none twice", async () => {
    const proxy = await new Proxy().start();
    try {
      const key = await createTask("example", { steps: 40, delay: 0.03 });
      const { seen, waiter, watch, ended } = record(proxy.url);
      watch(key, 0);
      await waiter.until(() => seen.events.length >= 5, "five events");

      proxy.cut();
      await waiter.until(() => seen.connection.at(-1).state === "reconnecting", "reconnecting");
      assert.equal(seen.connection.at(-1).reason, "lost");
      await waiter.until(ended, "the final state");

      assert.deepEqual(seqs(seen), range(1, 42));
      assert.equal(seen.connection.filter((detail) => detail.state === "open").length, 2);
    } finally {
      await proxy.stop();
    }
  });

  test("a server that stops answering is given up after pingInterval + pongTimeout", async () => {
    const proxy = await new Proxy().start();
    try {
      const key = await createTask("example", { steps: 30, delay: 0.05 });
      const { seen, waiter, watch, ended } = record(proxy.url, { pingInterval: 300, pongTimeout: 300 });
      watch(key, 0);
      await waiter.until(() => seen.events.length >= 3, "three events");

      proxy.frozen = true; // the socket stays open; nothing more arrives
      const frozenAt = Date.now();
      await waiter.until(() => seen.connection.at(-1).state === "reconnecting", "reconnecting");
      const noticed = Date.now() - frozenAt;
      assert.equal(seen.connection.at(-1).reason, "unresponsive");
      assert.ok(noticed >= 300 && noticed < 2000, `gave up after ${noticed} ms`);
      proxy.frozen = false;
      await waiter.until(ended, "the final state");

      assert.deepEqual(seqs(seen), range(1, 32));
    } finally {
      await proxy.stop();
    }
  });

  test("persisted positions let the next page resume where this one stopped", async () => {
    const storage = new MemoryStorage();
    const key = await createTask("example", { steps: 30, delay: 0.03 });
    const first = record(SOCKET_URL, { persist: storage });
    assert.deepEqual(first.client.persisted, []);
    first.watch(key, 0);
    await first.waiter.until(() => first.seen.events.length >= 4, "four events");
    first.client.close(); // a page being left: its positions are written at once
    const stopped = first.client.lastSeq(key);

    const second = record(SOCKET_URL, { persist: storage });
    assert.deepEqual(second.client.persisted, [{ key, lastSeq: stopped }]);
    for (const { key: persisted, lastSeq } of second.client.persisted) second.watch(persisted, lastSeq);
    await second.waiter.until(second.ended, "the final state");

    assert.deepEqual([...seqs(first.seen), ...seqs(second.seen)], range(1, 32));
    assert.equal(seqs(second.seen)[0], stopped + 1);
    second.client.unsubscribe(key);
    second.client.close();
    assert.equal(storage.getItem(`streamapp:${SOCKET_URL}`), null); // nothing left to resume
  });

  test("cancel ends a running task, and the final state says so", async () => {
    const key = await createTask("slow", { seconds: 30 });
    const { client, seen, waiter, watch, ended } = record();
    watch(key);
    await waiter.until(() => seen.events.length >= 1, "an event");
    client.cancel(key);
    await waiter.until(ended, "the final state");
    assert.equal(seen.states.at(-1).status, "cancelled");
  });

  test("an unknown task is a not_found error, and is not retried", async () => {
    const { seen, waiter, watch } = record();
    watch("demo.exampletask.999999999");
    await waiter.until(() => seen.errors.length === 1, "an error frame");
    assert.equal(seen.errors[0].code, "not_found");
    assert.equal(seen.errors[0].task, "demo.exampletask.999999999");
  });
});

describe("bad input", () => {
  test("a client without a WebSocket class says how to get one", () => {
    const builtIn = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
    delete globalThis.WebSocket; // as on Node 20 without --experimental-websocket
    try {
      assert.throws(() => new StreamClient(SOCKET_URL),
        /on Node 20 run with --experimental-websocket, or pass one as the WebSocket option/);
    } finally {
      Object.defineProperty(globalThis, "WebSocket", builtIn);
    }
  });

  test("persist must be session or a Storage-like object", () => {
    assert.throws(() => new StreamClient(SOCKET_URL, { persist: "local" }),
      /persist must be "session" or a Storage-like object, got local/);
  });

  test("keys and since are checked before anything is sent", () => {
    const { client } = record();
    assert.throws(() => client.subscribe(""), /a task key is a string/);
    assert.throws(() => client.subscribe("demo.exampletask.1", { since: -1 }), /since must be/);
    assert.throws(() => client.subscribe("demo.exampletask.1", { since: 1.5 }), /since must be/);
  });

  test("without a page, the URL must be given", () => {
    assert.throws(() => new StreamClient(), /no page to resolve \/ws\/tasks\/ against/);
  });
});
