// listTasks against a real daphne's GET /tasks/ (demo settings: anyone may watch).
import assert from "node:assert/strict";
import { test } from "node:test";

import { TaskListError, listTasks } from "streamapp";

import { SERVER, createTask } from "../support.js";

const endpoint = `${SERVER}/tasks/`;

test("pages through the tasks newest first, filters kept in next", async () => {
  const keys = [];
  for (const steps of [1, 2, 3]) keys.push(await createTask("example", { steps, delay: 0 }));
  const after = new Date(Date.now() - 60_000);

  const first = await listTasks({ endpoint, model: "demo.exampletask", createdAfter: after, limit: 2 });
  assert.equal(first.tasks.length, 2);
  assert.notEqual(first.next, null);
  const rest = [];
  for (let page = first; page.next !== null;) {
    page = await listTasks({ next: page.next });
    rest.push(...page.tasks);
  }
  const listed = [...first.tasks, ...rest].map((task) => task.task);
  assert.deepEqual(listed.slice(0, 3), keys.toReversed());
  const newest = first.tasks[0];
  assert.equal(newest.type, "state");
  assert.equal(newest.model, "example task");
  assert.ok(Date.parse(newest.created_at) > after.getTime());
});

test("status filters, one or several", async () => {
  const page = await listTasks({ endpoint, status: ["pending", "running"], limit: 100 });
  for (const task of page.tasks) assert.ok(["pending", "running"].includes(task.status));
});

test("a bad filter is a TaskListError carrying the server's error frame", async () => {
  await assert.rejects(listTasks({ endpoint, status: "done" }), (error) => {
    assert.ok(error instanceof TaskListError);
    assert.equal(error.status, 400);
    assert.equal(error.frame.code, "bad_request");
    assert.match(error.message, /unknown status 'done'/);
    return true;
  });
});
