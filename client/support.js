// What the client's tests share: the daphne they run against, tasks created as the demo page
// creates them, a proxy that can cut or freeze connections, and waiting with a deadline.
import net from "node:net";

/** daphne's base URL: tests/e2e/test_client_node.py starts it and passes it in STREAMAPP_SERVER. */
export const SERVER = process.env.STREAMAPP_SERVER;
if (!SERVER) {
  throw new Error("STREAMAPP_SERVER is not set: run these tests through " +
    "`pytest tests/e2e/test_client_node.py`, which starts daphne for them");
}
export const SOCKET_URL = `${SERVER.replace(/^http/, "ws")}/ws/tasks/`;
/** Every wait in these tests: long enough for a loaded 2-core CI machine. */
export const DEADLINE = 20_000;

/** Create a demo task through `POST /demo/tasks/`, CSRF token and all; returns its key. */
export async function createTask(kind, fields = {}) {
  const page = await fetch(`${SERVER}/`);
  const cookie = page.headers.getSetCookie().map((line) => line.split(";")[0]).join("; ");
  const token = (await page.text()).match(/name="csrfmiddlewaretoken" value="([^"]+)"/)[1];
  const body = new URLSearchParams({ kind });
  for (const [name, value] of Object.entries(fields)) body.set(`${kind}-${name}`, String(value));
  const response = await fetch(`${SERVER}/demo/tasks/`, {
    method: "POST", body, headers: { Cookie: cookie, "X-CSRFToken": token },
  });
  if (response.status !== 201) throw new Error(`could not create: ${await response.text()}`);
  return (await response.json()).key;
}

/** Resolves when `check()` is truthy after one of the client's callbacks; rejects at the deadline. */
export class Waiter {
  #waits = new Set();

  /** Call after anything the tests wait on may have changed. */
  changed() {
    for (const wait of [...this.#waits]) {
      if (wait.check()) {
        this.#waits.delete(wait);
        clearTimeout(wait.timer);
        wait.resolve();
      }
    }
  }

  until(check, what, deadline = DEADLINE) {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const wait = { check, resolve };
      wait.timer = setTimeout(() => {
        this.#waits.delete(wait);
        reject(new Error(`not within ${deadline} ms: ${what}`));
      }, deadline);
      this.#waits.add(wait);
    });
  }
}

/** A TCP proxy to daphne whose connections a test can cut (a drop) or freeze (a hung server). */
export class Proxy {
  #server;
  #pairs = new Set();
  frozen = false; // hold back what daphne sends, as a server that stopped answering does

  async start(target = new URL(SERVER)) {
    this.#server = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      const pair = { client, upstream };
      this.#pairs.add(pair);
      client.on("data", (data) => upstream.write(data));
      upstream.on("data", (data) => { if (!this.frozen) client.write(data); });
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.#pairs.delete(pair);
      };
      for (const socket of [client, upstream]) {
        socket.on("close", end);
        socket.on("error", end);
      }
    });
    await new Promise((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    return this;
  }

  get url() {
    return `ws://127.0.0.1:${this.#server.address().port}/ws/tasks/`;
  }

  get connections() {
    return this.#pairs.size;
  }

  /** Drop every connection without a close frame. */
  cut() {
    for (const { client, upstream } of this.#pairs) {
      client.resetAndDestroy();
      upstream.destroy();
    }
  }

  async stop() {
    this.cut();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}

/** A Storage-like object in memory: what sessionStorage is to a page. */
export class MemoryStorage {
  #items = new Map();
  getItem(key) { return this.#items.get(key) ?? null; }
  setItem(key, value) { this.#items.set(key, String(value)); }
  removeItem(key) { this.#items.delete(key); }
}
