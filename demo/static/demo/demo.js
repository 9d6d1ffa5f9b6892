// The demo page: start demo tasks over HTTP, watch each as a card through one StreamClient.
// After a reload it rebuilds the cards it was watching (kept by the client's `persist`) and the
// user's recent tasks (GET /tasks/), each replayed from the log and then live.
import { StreamClient, listTasks } from "../streamapp/streamapp.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);

const TITLES = {
  "demo.exampletask": "Example task",
  "demo.failingtask": "Failing task",
  "demo.slowtask": "Slow task",
};

// How far along a task is (0..1) after one of its events, from what each demo task sends.
const PROGRESS = {
  "demo.exampletask": (frame) =>
    frame.event === "complete" ? 1 : (frame.data.step ?? 0) / frame.data.total_steps,
  "demo.failingtask": (frame, fields) => frame.data.step / fields.fail_at,
  "demo.slowtask": (frame, fields) => frame.data.elapsed / fields.seconds,
};

// Why the socket was given up, as the indicator says it.
const LOSS_TEXT = {
  lost: "Connection lost",
  restart: "Server restarting",
  rate_limited: "Too many connections",
  unresponsive: "Server not responding",
};

const DISMISSED = "demo:dismissed"; // sessionStorage: cards this tab closed stay closed

const connection = document.getElementById("connection");
let countdown;

const client = new StreamClient(undefined, {
  persist: "session",
  // A server that stops answering shows within a second, not when TCP gives up: after 200 ms
  // without a frame the page pings, and 400 ms without an answer ends the socket.
  pingInterval: 200,
  pongTimeout: 400,
  onConnectionState: showConnection,
  onError: showStartError,
});
const cards = new Map(); // key -> TaskCard

function connectionText({ state, attempt, retryAt, reason }) {
  if (state === "open") return "Connected";
  if (state === "closed") return "Disconnected";
  if (state === "connecting") return attempt > 0 ? `Reconnecting… (attempt ${attempt})` : "Connecting…";
  const why = LOSS_TEXT[reason] ?? LOSS_TEXT.lost;
  const seconds = Math.max(0, (retryAt - Date.now()) / 1000);
  const attemptText = attempt > 0 ? ` (attempt ${attempt})` : "";
  return seconds > 0
    ? `${why}: reconnecting in ${seconds.toFixed(1)} s${attemptText}`
    : `${why}: reconnecting now${attemptText}`;
}

function showConnection(detail) {
  clearInterval(countdown);
  connection.dataset.state = detail.state;
  connection.dataset.reason = detail.reason ?? "";
  const render = () => { connection.textContent = connectionText(detail); };
  render();
  if (detail.state === "reconnecting" && detail.delay > 0) countdown = setInterval(render, 100);
  if (detail.state === "open") {
    connection.dataset.opens = String(Number(connection.dataset.opens ?? 0) + 1);
  }
}

function showStartError(frame) {
  const paragraph = document.getElementById("start-error");
  paragraph.textContent = frame ? frame.message : "";
}

function modelOf(key) {
  return key.split(".").slice(0, 2).join(".");
}

function describe(data) {
  if (data === null || data === undefined) return "";
  return Object.entries(data)
    .map(([name, value]) => `${name.replaceAll("_", " ")} ${JSON.stringify(value)}`)
    .join(", ");
}

/** One task's card: renders every frame the client hands it. */
class TaskCard {
  constructor({ key, fields, created_at: createdAt }) {
    this.key = key;
    this.fields = fields;
    this.createdAt = createdAt;
    this.percent = 0;
    this.progressOf = PROGRESS[modelOf(key)] ?? ((frame) => frame.data?.step / frame.data?.total_steps);
    const template = document.getElementById("card-template");
    this.element = template.content.firstElementChild.cloneNode(true);
    this.element.dataset.key = key;
    this.part = (name) => this.element.querySelector(`.${name}`);
    const number = key.split(".")[2];
    const titleId = `task-${key.replaceAll(".", "-")}`;
    this.part("card-title").id = titleId;
    this.part("card-title").textContent = `${TITLES[modelOf(key)] ?? modelOf(key)} #${number}`;
    this.part("card-key").textContent = key;
    this.part("bar").setAttribute("aria-labelledby", titleId);
    this.part("cancel").setAttribute("aria-label", `Cancel ${this.part("card-title").textContent}`);
    this.part("cancel").addEventListener("click", () => this.cancel());
    this.part("dismiss").addEventListener("click", () => this.dismiss());
  }

  onEvent(frame) {
    const item = document.createElement("li");
    item.dataset.seq = String(frame.seq);
    item.dataset.event = frame.event;
    if (frame.data?.step !== undefined) item.dataset.step = String(frame.data.step);
    item.textContent = `#${frame.seq} ${frame.event} ${describe(frame.data)}`;
    this.part("events").append(item);
    this.part("event-count").textContent = String(this.part("events").children.length);
    this.part("latest").textContent = `${frame.event}${frame.data ? ": " + describe(frame.data) : ""}`;
    const fraction = this.progressOf(frame, this.fields);
    if (Number.isFinite(fraction)) this.setProgress(fraction);
  }

  onState(frame) {
    this.element.removeAttribute("aria-busy"); // the card shows the task as it is now
    this.element.dataset.status = frame.status;
    this.part("status").textContent = frame.status;
    const ended = FINAL.has(frame.status);
    this.part("cancel").disabled = ended;
    this.part("dismiss").hidden = !ended;
    if (frame.status === "completed") {
      this.setProgress(1);
      this.show("result", `Result: ${JSON.stringify(frame.final_value)}`);
    } else if (frame.status === "cancelled") {
      // Who or what cancelled it, when the server knows (DESIGN §3).
      this.show("reason", frame.error?.message ?? "Cancelled");
    } else if (frame.error) {
      this.show("error", `${frame.error.type}: ${frame.error.message}`);
    }
    this.label();
  }

  onError(frame) {
    this.show("error", `${frame.code}: ${frame.message}`);
  }

  setProgress(fraction) {
    this.percent = Math.round(Math.min(Math.max(fraction, 0), 1) * 100);
    this.part("bar").setAttribute("aria-valuenow", String(this.percent));
    this.part("bar-fill").style.width = `${this.percent}%`;
    this.label();
  }

  /** The bar's caption: how far it got, and for an ended task how it ended. */
  label() {
    const status = this.element.dataset.status;
    const text = {
      failed: `Failed at ${this.percent}%`,
      cancelled: `Cancelled at ${this.percent}%`,
      completed: "Done",
    }[status] ?? `${this.percent}%`;
    this.part("bar-label").textContent = text;
    this.part("bar").setAttribute("aria-valuetext", text);
  }

  show(name, text) {
    this.part(name).textContent = text;
    this.part(name).hidden = false;
  }

  cancel() {
    this.part("cancel").disabled = true;
    this.part("status").textContent = "cancelling…";
    client.cancel(this.key);
  }

  dismiss() {
    client.unsubscribe(this.key);
    cards.delete(this.key);
    this.element.remove();
    const dismissed = new Set(JSON.parse(sessionStorage.getItem(DISMISSED) ?? "[]"));
    sessionStorage.setItem(DISMISSED, JSON.stringify([...dismissed.add(this.key)]));
    document.getElementById("no-tasks").hidden = cards.size > 0;
  }
}

/** Newest first: does card `a` go above card `b`? */
function above(a, b) {
  const [at, bt] = [Date.parse(a.createdAt), Date.parse(b.createdAt)];
  return at !== bt ? at > bt : a.key > b.key;
}

/** Put a card in its place: before the first card created before it. */
function place(card) {
  const list = document.getElementById("tasks");
  const older = [...list.children].find((element) => above(card, cards.get(element.dataset.key)));
  list.insertBefore(card.element, older ?? null);
  document.getElementById("no-tasks").hidden = true;
}

function watch(task) {
  if (cards.has(task.key)) return;
  const card = new TaskCard(task);
  place(card);
  cards.set(task.key, card);
  client.subscribe(task.key, {
    // A new card replays the task from its first event: after a reload the card is new too,
    // so the log fills it in and the client's seq check keeps every event to once.
    since: 0,
    onEvent: (frame) => card.onEvent(frame),
    onState: (frame) => card.onState(frame),
    onError: (frame) => card.onError(frame),
  });
}

async function start(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  showStartError(null);
  try {
    // The form carries Django's CSRF token field, so a plain form POST passes the CSRF check.
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.message ?? `HTTP ${response.status}`);
    watch(body);
  } catch (error) {
    showStartError({ message: `Could not start the task: ${error.message}` });
  } finally {
    button.disabled = false;
  }
}

/** The cards this tab was watching and the user's recent tasks, as before the reload. */
async function restore() {
  const keys = new Set(client.persisted.map(({ key }) => key));
  try {
    const recent = await listTasks({ model: Object.keys(TITLES), limit: 20 });
    for (const task of recent.tasks) keys.add(task.task);
  } catch (error) {
    showStartError({ message: `Could not list your recent tasks: ${error.message}` });
  }
  const dismissed = new Set(JSON.parse(sessionStorage.getItem(DISMISSED) ?? "[]"));
  const wanted = [...keys].filter((key) => !dismissed.has(key) && !cards.has(key));
  if (wanted.length === 0) return;
  const query = new URLSearchParams(wanted.map((key) => ["key", key]));
  let described;
  try {
    const response = await fetch(`${document.getElementById("tasks").dataset.describe}?${query}`, {
      headers: { Accept: "application/json" }, credentials: "same-origin",
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    described = (await response.json()).tasks;
  } catch (error) {
    showStartError({ message: `Could not restore your tasks: ${error.message}` });
    return;
  }
  for (const task of described) watch(task);
  // Keys that are no demo task any more (deleted, say) are not watched again.
  const found = new Set(described.map((task) => task.key));
  for (const { key } of client.persisted) if (!found.has(key)) client.unsubscribe(key);
}

for (const form of document.querySelectorAll("form.starter")) {
  form.addEventListener("submit", start);
}
restore().finally(() => { document.getElementById("tasks").dataset.restored = "true"; });
