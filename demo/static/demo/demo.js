// The demo page: start demo tasks over HTTP, watch each as a card through one StreamClient.
import { StreamClient } from "../streamapp/streamapp.js";

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

const CONNECTION_TEXT = {
  connecting: () => "Connecting…",
  open: () => "Connected",
  reconnecting: ({ delay, attempt }) =>
    `Connection lost: retrying in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})`,
  closed: () => "Disconnected",
};

const connection = document.getElementById("connection");
const client = new StreamClient(undefined, { onConnectionState: showConnection, onError: showStartError });

function showConnection(detail) {
  connection.dataset.state = detail.state;
  connection.textContent = CONNECTION_TEXT[detail.state](detail);
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
  constructor({ key, fields }) {
    this.key = key;
    this.fields = fields;
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
    this.element.dataset.status = frame.status;
    this.part("status").textContent = frame.status;
    const ended = FINAL.has(frame.status);
    this.part("cancel").disabled = ended;
    this.part("dismiss").hidden = !ended;
    if (frame.status === "completed") {
      this.setProgress(1);
      this.show("result", `Result: ${JSON.stringify(frame.final_value)}`);
    }
    if (frame.error) this.show("error", `${frame.error.type}: ${frame.error.message}`);
  }

  onError(frame) {
    this.show("error", `${frame.code}: ${frame.message}`);
  }

  setProgress(fraction) {
    const percent = Math.round(Math.min(Math.max(fraction, 0), 1) * 100);
    this.part("bar").setAttribute("aria-valuenow", String(percent));
    this.part("bar-fill").style.width = `${percent}%`;
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
    this.element.remove();
    document.getElementById("no-tasks").hidden = document.getElementById("tasks").children.length > 0;
  }
}

function watch(task) {
  const card = new TaskCard(task);
  document.getElementById("tasks").prepend(card.element);
  document.getElementById("no-tasks").hidden = true;
  client.subscribe(task.key, {
    since: 0, // a new task: every event from the first
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

for (const form of document.querySelectorAll("form.starter")) {
  form.addEventListener("submit", start);
}
