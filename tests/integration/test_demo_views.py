"""The demo page's HTTP side: the page renders its starters, POST /demo/tasks/ creates tasks."""

from __future__ import annotations

import pytest
from django.test import Client

from demo.models import ExampleTask, FailingTask, SlowTask

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser_client():
    """A client that, like a browser, must pass Django's CSRF check."""
    client = Client(enforce_csrf_checks=True)
    page = client.get("/")
    client.csrf_token = page.cookies["csrftoken"].value
    return client


def post(client, **data):
    return client.post("/demo/tasks/", data, HTTP_X_CSRFTOKEN=client.csrf_token)


def test_the_page_offers_a_starter_per_task_kind_with_a_csrf_token():
    response = Client().get("/")
    assert response.status_code == 200
    html = response.content.decode()
    for kind in ("example", "failing", "slow"):
        assert f'data-kind="{kind}"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'name="example-steps"' in html and 'min="1"' in html
    assert "/static/demo/demo.js" in html


@pytest.mark.parametrize(
    ("data", "model", "fields"),
    [
        ({"kind": "example", "example-message": "hi", "example-steps": "5", "example-delay": "0.5"},
         ExampleTask, {"message": "hi", "steps": 5, "delay": 0.5}),
        ({"kind": "failing", "failing-fail_at": "3"}, FailingTask, {"fail_at": 3}),
        ({"kind": "slow", "slow-seconds": "2.5"}, SlowTask, {"seconds": 2.5}),
    ],
)
def test_posting_a_kind_creates_a_pending_task_and_returns_its_key(browser_client, data, model,
                                                                    fields):
    response = post(browser_client, **data)

    assert response.status_code == 201
    body = response.json()
    assert body["kind"] == data["kind"] and body["fields"] == fields
    task = model.objects.get()
    assert body["key"] == task.task_key
    assert task.status == "pending"  # the page's subscription starts it
    assert {name: getattr(task, name) for name in fields} == fields


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "example", "example-steps": "0", "example-delay": "0.1"},
         "steps: Ensure this value is greater than or equal to 1."),
        ({"kind": "example", "example-steps": "3", "example-delay": "soon"},
         "delay: Enter a number."),
        ({"kind": "slow", "slow-seconds": "100000"},
         "seconds: Ensure this value is less than or equal to 600."),
        ({"kind": "failing"}, "fail_at: This field is required."),
        ({"kind": "rm -rf"}, "unknown kind 'rm -rf'; expected one of example, failing, slow"),
        ({}, "unknown kind ''; expected one of example, failing, slow"),
    ],
)
def test_bad_input_is_a_400_that_says_what_is_wrong_and_creates_nothing(browser_client, data,
                                                                        message):
    response = post(browser_client, **data)

    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["code"] == "bad_request"
    assert response.json()["message"] == message
    assert not ExampleTask.objects.exists() and not SlowTask.objects.exists()
    assert not FailingTask.objects.exists()


def test_a_post_without_the_csrf_token_is_refused():
    client = Client(enforce_csrf_checks=True)
    client.get("/")
    response = client.post("/demo/tasks/", {"kind": "slow", "slow-seconds": "1"})
    assert response.status_code == 403
    assert not SlowTask.objects.exists()


def test_only_post_creates(browser_client):
    assert browser_client.get("/demo/tasks/").json() == {"tasks": []}
    assert browser_client.put("/demo/tasks/", HTTP_X_CSRFTOKEN=browser_client.csrf_token
                              ).status_code == 405
    assert not ExampleTask.objects.exists()


def test_get_describes_the_tasks_a_reloaded_page_rebuilds_its_cards_from(browser_client):
    example = ExampleTask.objects.create(message="hi", steps=5, delay=0.5)
    slow = SlowTask.objects.create(seconds=2.5)
    query = "&".join(f"key={key}" for key in (
        slow.task_key, example.task_key, slow.task_key, "demo.slowtask.999999",
        "demo.signaltask.1", "nonsense"))

    body = browser_client.get(f"/demo/tasks/?{query}").json()

    assert body == {"tasks": [
        {"key": slow.task_key, "kind": "slow", "fields": {"seconds": 2.5},
         "created_at": slow.created_at.isoformat()},
        {"key": example.task_key, "kind": "example",
         "fields": {"message": "hi", "steps": 5, "delay": 0.5},
         "created_at": example.created_at.isoformat()},
    ]}


def test_get_takes_at_most_a_hundred_keys(browser_client):
    response = browser_client.get("/demo/tasks/?" + "&".join(["key=demo.slowtask.1"] * 101))
    assert response.status_code == 400
    assert response.json()["message"] == "at most 100 keys at a time, got 101"


def test_the_demo_serves_the_client_module():
    response = Client().get("/static/streamapp/streamapp.js")
    assert response.status_code == 200
    assert "javascript" in response["Content-Type"]
    assert b"export class StreamClient" in b"".join(response.streaming_content)
