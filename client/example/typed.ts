// A front-end's use of the package, type-checked by `npm run check` (tsc --noEmit): it imports
// "streamapp" by name, as a bundled application does, so the package's "exports" and "types"
// are what resolve it. The @ts-expect-error lines prove the types reject misuse.
import {
  ConnectionState,
  StreamClient,
  TaskListError,
  listTasks,
  type ConnectionDetail,
  type EventFrame,
  type ListedTask,
  type StateFrame,
  type TaskPage,
} from "streamapp";

const progress = new Map<string, number>();

const client = new StreamClient("wss://example.com/ws/tasks/", {
  persist: "session",
  pingInterval: 5_000,
  onConnectionState(detail: ConnectionDetail) {
    if (detail.state === ConnectionState.RECONNECTING && detail.retryAt !== null) {
      const seconds: number = Math.max(0, detail.retryAt - Date.now()) / 1000;
      console.log(`reconnecting in ${seconds.toFixed(1)} s (${detail.reason ?? "lost"})`);
    }
  },
});

function watch(key: string, since?: number): () => void {
  return client.subscribe(key, {
    since,
    onEvent(frame: EventFrame) {
      progress.set(frame.task, frame.seq);
    },
    onState(frame: StateFrame) {
      if (frame.status === "cancelled") console.log(frame.error?.message ?? "Cancelled");
      // @ts-expect-error: a status is one of five words
      if (frame.status === "done") console.log("never");
    },
    onError: (frame) => console.warn(frame.code, frame.message),
  });
}

for (const { key, lastSeq } of client.persisted) watch(key, lastSeq ?? undefined);

async function everyRunningTask(): Promise<ListedTask[]> {
  const found: ListedTask[] = [];
  let page: TaskPage = await listTasks({ status: ["running", "pending"], limit: 50 });
  found.push(...page.tasks);
  while (page.next !== null) {
    page = await listTasks({ next: page.next });
    found.push(...page.tasks);
  }
  return found;
}

everyRunningTask().then(
  (tasks) => tasks.forEach((task) => watch(task.task, 0)),
  (error: unknown) => {
    if (error instanceof TaskListError) console.error(error.status, error.frame?.code);
  },
);

// @ts-expect-error: since is a number
client.subscribe("demo.exampletask.1", { since: "3" });
// @ts-expect-error: persist is "session" or a Storage-like object
new StreamClient(undefined, { persist: "local" });

const state: "connecting" | "open" | "reconnecting" | "closed" = client.connectionState;
export { state };
