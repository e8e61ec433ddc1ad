"""Kubernetes Events posted by the operator's own watch handlers (`kube/workloads.py`, the
injection). kopf's `kopf.event` works only inside kopf's per-object workers, which these
handlers no longer run in; the Events look like kopf's (same source component and name
prefix, taken from kopf's settings), so `kubectl describe` shows one operator.

Posting is best effort, as kopf's is: a failure is logged and forgotten, never retried.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import urllib3

from sotadb.kube.api import ApiError, KubeApi

MAX_MESSAGE: Final = 1024  # what kopf cuts an Event's message to
logger = logging.getLogger(__name__)


def reference(body: Mapping[str, Any]) -> dict[str, str]:
    """An Event's involvedObject for an object's body."""
    metadata = body.get("metadata") or {}
    fields = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "uid": metadata.get("uid"),
    }
    return {key: str(value) for key, value in fields.items() if value}


def event_document(
    involved: Mapping[str, str],
    *,
    type: str,
    reason: str,
    message: str,
    component: str,
    instance: str | None,
    prefix: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The Event as kopf builds it. Pure."""
    if len(message) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2 - 2
        message = f"{message[:half]}...{message[-half:]}"
    stamp = now.isoformat()
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": involved.get("namespace") or "default", "generateName": prefix},
        "action": "Action?",
        "type": type,
        "reason": reason,
        "message": message,
        "reportingComponent": component,
        "source": {"component": component},
        "involvedObject": dict(involved),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": stamp,
    }
    if instance:
        document["reportingInstance"] = instance
    return document


@dataclass(frozen=True)
class EventPoster:
    api: KubeApi
    component: str = "kopf"
    instance: str | None = None
    prefix: str = "kopf-event-"
    enabled: bool = True  # kopf's settings.posting.enabled

    def post(self, involved: Mapping[str, str], *, type: str, reason: str, message: str) -> None:
        """One Event (blocking: call it from a thread)."""
        if not self.enabled:
            return
        document = event_document(
            involved,
            type=type,
            reason=reason,
            message=message,
            component=self.component,
            instance=self.instance,
            prefix=self.prefix,
            now=datetime.datetime.now(datetime.UTC),
        )
        try:
            self.api.create(document)
        except (ApiError, urllib3.exceptions.HTTPError, OSError) as e:
            logger.warning("posting the %s Event %s failed: %s", type, reason, e)
