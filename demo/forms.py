"""What the demo page may start: one form per demo task, with bounds a public page needs."""

from __future__ import annotations

from typing import NamedTuple

from django import forms

from .models import ExampleTask, FailingTask, SlowTask


class ExampleTaskForm(forms.ModelForm):
    message = forms.CharField(max_length=200, required=False, initial="hello")
    steps = forms.IntegerField(min_value=1, max_value=1000, initial=20)
    delay = forms.FloatField(min_value=0, max_value=5, initial=0.2, step_size=0.01,
                             label="Delay (seconds)")

    class Meta:
        model = ExampleTask
        fields = ["message", "steps", "delay"]


class FailingTaskForm(forms.ModelForm):
    fail_at = forms.IntegerField(min_value=1, max_value=1000, initial=4, label="Fail at step")

    class Meta:
        model = FailingTask
        fields = ["fail_at"]


class SlowTaskForm(forms.ModelForm):
    seconds = forms.FloatField(min_value=0.1, max_value=600, initial=30, step_size=0.1)

    class Meta:
        model = SlowTask
        fields = ["seconds"]


class Starter(NamedTuple):
    """One box on the page that starts a kind of task."""

    form: type[forms.ModelForm]
    title: str
    description: str


# kind (the page's and the endpoint's name for a task type) -> its starter
STARTERS: dict[str, Starter] = {
    "example": Starter(ExampleTaskForm, "Example task",
                       "Sends start, one progress event per step, then complete."),
    "failing": Starter(FailingTaskForm, "Failing task",
                       "Reports progress, then raises RuntimeError at the chosen step."),
    "slow": Starter(SlowTaskForm, "Slow task",
                    "Reports the elapsed time ten times a second: try cancelling it."),
}
