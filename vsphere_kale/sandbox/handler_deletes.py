"""Deletes of the sandbox API server: delete and deletecollection with their options."""

from __future__ import annotations

import logging

from vsphere_kale.policy.kubestatus import build_status
from vsphere_kale.sandbox.handler_base import (
    RequestInfo,
)
from vsphere_kale.sandbox.handler_writes import WriteHandler
from vsphere_kale.sandbox.resources import (
    StatusError,
)
from vsphere_kale.sandbox.types import (
    JSONObject,
)
from vsphere_kale.sandbox.validation import (
    invalid_error,
    validate_delete_options,
)

# One logger for everything the API server says (operators and tests filter on its name).
log = logging.getLogger("vsphere_kale.sandbox.server")


class DeleteHandler(WriteHandler):
    def _delete_options(self) -> JSONObject:
        """DeleteOptions from the body, else from the query (as kube decodes them), validated."""
        if self.request.body:
            options = self._body()
        else:
            options = {}
            policy = self.get_query_argument("propagationPolicy", None)
            if policy is not None:
                options["propagationPolicy"] = policy
            orphan = self.get_query_argument("orphanDependents", None)
            if orphan is not None:
                options["orphanDependents"] = orphan.lower() == "true"
        causes = validate_delete_options(options)
        if causes:
            raise invalid_error("DeleteOptions", "meta.k8s.io", "", causes)
        return options

    def _delete(self, info: RequestInfo) -> None:
        assert info.name is not None
        options = self._delete_options()
        dry_run = self._dry_run(options)
        st = self._storage_type(info)
        existed = self.sandbox.store.get(st, info.namespace, info.name)
        obj = self.sandbox.store.delete(
            st,
            info.namespace,
            info.name,
            dry_run=dry_run,
            preconditions=options.get("preconditions")
            if isinstance(options.get("preconditions"), dict)
            else None,
        )
        if (
            obj["metadata"].get("deletionTimestamp")
            or existed is None
            or (info.rt.returns_deleted_object)
        ):
            # Still there (finalizers, or a namespace being emptied), or a type whose registry
            # returns the deleted object: kube answers the object.
            self._send(200, self._served(info, obj))
            return
        details: JSONObject = {
            "name": info.name,
            "kind": info.rt.plural,
            "uid": obj["metadata"].get("uid", ""),
        }
        if info.rt.group:
            details["group"] = info.rt.group
        self._send(200, build_status(status="Success", details=details))

    def _delete_collection(self, info: RequestInfo) -> None:
        options = self._delete_options()
        dry_run = self._dry_run(options)
        items, _ = self._matching(info)
        st = self._storage_type(info)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                deleted.append(
                    self._served(
                        info,
                        self.sandbox.store.delete(
                            st, meta.get("namespace"), meta["name"], dry_run=dry_run
                        ),
                    )
                )
            except StatusError as exc:
                if exc.code != 404:  # deleted concurrently: fine
                    raise
        self._send(
            200,
            {
                "kind": f"{info.rt.kind}List",
                "apiVersion": info.rt.api_version(info.version),
                "metadata": {"resourceVersion": self.sandbox.store.resource_version},
                "items": deleted,
            },
        )
