"""Writes of the sandbox API server: create, update, patch (server-side apply included),
admission and validation, and the virtual resources (reviews, TokenRequest).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from vsphere_kale.sandbox import protobuf
from vsphere_kale.sandbox.apply import apply as apply_config
from vsphere_kale.sandbox.apply import default_manager, record_update
from vsphere_kale.sandbox.decoding import (
    check_applied,
    check_apply_config,
    check_body,
    check_patched,
)
from vsphere_kale.sandbox.handler_base import (
    ESCALATION_CHECKED,
    KNOWN_TOP_LEVEL_FIELDS,
    PVCS,
    RBAC_GROUP,
    STORAGE_CLASSES,
    RequestInfo,
    complete_review,
    refuse_resource_version,
    resolve,
    validate_name,
)
from vsphere_kale.sandbox.handler_reads import ReadHandler
from vsphere_kale.sandbox.patching import (
    APPLY_PATCH,
    PATCH_TYPES,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
    parse_patch_body,
    unsupported_media_type,
)
from vsphere_kale.sandbox.resources import (
    StatusError,
    bad_request,
    invalid,
    not_found,
    server_not_found,
    to_storage,
)
from vsphere_kale.sandbox.store import clone, now_rfc3339
from vsphere_kale.sandbox.types import (
    AdmissionAttributes,
    AdmissionRejected,
    JSONObject,
    ResourceRef,
    UserInfo,
)
from vsphere_kale.sandbox.validation import (
    check_pvc_decodes,
    invalid_error,
    needs_default_class,
    not_supported,
    pick_default_storage_class,
    required,
    validate_pvc,
    validate_pvc_update,
)

# One logger for everything the API server says (operators and tests filter on its name).
log = logging.getLogger("vsphere_kale.sandbox.server")


class WriteHandler(ReadHandler):
    def _body(self) -> JSONObject:
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == protobuf.PROTOBUF:
            return protobuf.decode_body(self.request.body or b"")
        if content_type and content_type not in ("application/json", "*/*"):
            # protobuf.py decodes what kubectl sends; anything else is refused, not guessed.
            raise StatusError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format ({content_type}) - "
                "accepted media types include: application/json",
            )
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        return body

    def _dry_run(self, body: JSONObject | None = None) -> bool:
        values = self.get_query_arguments("dryRun")
        if body is not None and isinstance(body.get("dryRun"), list):
            values = values + [str(v) for v in body["dryRun"]]
        if any(value != "All" for value in values):
            # kube validates the options object of the verb: Create/Update/Patch/DeleteOptions.
            kind = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}
            listed = "[" + ", ".join(json.dumps(v) for v in values) + "]"
            raise invalid_error(
                kind.get(self.request.method or "", "DeleteOptions"),
                "meta.k8s.io",
                "",
                [not_supported("dryRun", "", ["All"]).with_value(listed)],
            )
        return bool(values)

    def _field_validation(self, obj: JSONObject) -> None:
        mode = self.get_query_argument("fieldValidation", "") or "Warn"
        if mode not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f'invalid fieldValidation "{mode}": must be Ignore, Warn or Strict')
        if mode == "Ignore":
            return
        unknown = sorted(k for k in obj if k not in KNOWN_TOP_LEVEL_FIELDS)
        if not unknown:
            return
        if mode == "Strict":
            text = ", ".join(f'unknown field "{k}"' for k in unknown)
            raise bad_request(f"strict decoding error: {text}")
        for k in unknown:
            self._warn(f'unknown field "{k}"')

    @staticmethod
    def _group_version(info: RequestInfo) -> str:
        """The group/version as kube prints a GroupVersionKind (``/v1`` for the core group)."""
        return f"{info.rt.group}/{info.version}"

    def _check_type_meta(self, info: RequestInfo, body: JSONObject) -> None:
        expected = info.rt.api_version(info.version)
        if "apiVersion" in body and body["apiVersion"] != expected:
            raise bad_request(
                f"the API version in the data ({body['apiVersion']}) does not "
                f"match the expected API version ({expected})"
            )
        if "kind" in body and body["kind"] != info.rt.kind:
            raise bad_request(
                f"the kind in the data ({body['kind']}) does not match the "
                f"expected kind ({info.rt.kind})"
            )
        if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
            check_body(
                info.rt.kind, info.version, body, custom=info.rt.custom
            )  # refuses it in Go's words
        meta = body.get("metadata")
        body_ns = (meta or {}).get("namespace")
        if info.rt.namespaced and body_ns and info.namespace and body_ns != info.namespace:
            raise bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )

    async def _admit(
        self,
        info: RequestInfo,
        user: UserInfo,
        operation: str,
        obj: JSONObject,
        old: JSONObject | None,
        *,
        dry_run: bool,
    ) -> JSONObject:
        """Escalation check, then the admission hook; returns the (mutated) served object."""
        sb = self.sandbox
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if info.rt.group == RBAC_GROUP and info.rt.plural in ESCALATION_CHECKED:
            refusal = await resolve(sb.check_escalation(user, info.rt.ref, clone(obj)))
            if refusal:
                prefix = f'{info.rt.qualified} "{name}" is forbidden: '
                message = refusal if refusal.startswith(info.rt.qualified) else prefix + refusal
                raise StatusError(
                    403,
                    "Forbidden",
                    message,
                    details={"name": name, "group": info.rt.group, "kind": info.rt.plural},
                )
        if not info.rt.admitted:
            self._validate(info, obj, old)
            return obj
        if operation == "CREATE" and info.rt.storage_ref == PVCS:
            check_pvc_decodes(obj)
            self._default_storage_class(obj)
        attrs = AdmissionAttributes(
            operation=operation,
            group=info.rt.group,
            version=info.version,
            kind=info.rt.kind,
            plural=info.rt.plural,
            namespace=info.namespace or "",
            name=name,
            user=user,
            dry_run=dry_run,
            subresource=info.subresource,
        )
        try:
            result = await sb.admit(attrs, clone(obj), clone(old) if old is not None else None)
        except AdmissionRejected as exc:
            raise StatusError(exc.code, exc.reason, exc.message) from exc
        for warning in result.warnings:
            self._warn(warning)
        mutated = result.obj
        new_meta = mutated.get("metadata") or {}
        for field in ("name", "namespace", "generateName"):
            if new_meta.get(field) != meta.get(field):
                raise StatusError(
                    500,
                    "InternalError",
                    f"admission changed metadata.{field} "
                    f"from {meta.get(field)!r} to {new_meta.get(field)!r}",
                )
        self._validate(info, mutated, old)
        return mutated

    def _default_storage_class(self, pvc: JSONObject) -> None:
        """The DefaultStorageClass admission plugin: runs before the mutating webhooks."""
        if not needs_default_class(pvc):
            return
        chosen = pick_default_storage_class(self.sandbox.store.list_objects(STORAGE_CLASSES))
        if chosen is not None:
            pvc.setdefault("spec", {})["storageClassName"] = chosen

    def _validate(self, info: RequestInfo, obj: JSONObject, old: JSONObject | None) -> None:
        """Type validation after mutating admission, as kube-apiserver orders it."""
        if info.rt.storage_ref != PVCS:
            return
        check_pvc_decodes(obj)
        causes = validate_pvc(obj) if old is None else validate_pvc_update(obj, old)
        if causes:
            name = str((obj.get("metadata") or {}).get("name") or "")
            raise invalid_error(info.rt.kind, info.rt.group, name, causes)

    async def _create(self, info: RequestInfo, user: UserInfo) -> None:
        if info.subresource == "token":
            await self._token_request(info)
            return
        body = self._body()
        if info.rt.virtual:
            await self._review(info, user, body)
            return
        dry_run = self._dry_run()
        self._check_type_meta(info, body)
        check_body(info.rt.kind, info.version, body, custom=info.rt.custom)
        body.setdefault("metadata", {})
        if info.rt.namespaced and info.namespace:
            body["metadata"]["namespace"] = info.namespace
        elif info.rt.namespaced:
            raise bad_request(
                f"{info.rt.plural} must be created in a namespace "
                f"(POST .../namespaces/<ns>/{info.rt.plural})"
            )
        body["apiVersion"] = info.rt.api_version(info.version)
        body["kind"] = info.rt.kind
        self._field_validation(body)
        name = body["metadata"].get("name")
        if name:
            validate_name(info.rt, name)
        elif not body["metadata"].get("generateName"):
            raise invalid(
                info.rt, "", [("metadata.name", "Required value: name or generateName is required")]
            )
        refuse_resource_version(body)
        admitted = await self._admit(info, user, "CREATE", body, None, dry_run=dry_run)
        self._record_update(info, None, admitted)
        self._store_created(info, admitted, dry_run=dry_run)

    def _store_created(self, info: RequestInfo, admitted: JSONObject, *, dry_run: bool) -> None:
        """Store an admitted new object and answer 201 with it as served."""
        stored = self.sandbox.store.create(
            self._storage_type(info),
            info.namespace,
            to_storage(info.rt, admitted),
            dry_run=dry_run,
        )
        self._send(201, self._served(info, stored))

    def _field_manager(self, *, apply_request: bool) -> str:
        manager = self.get_query_argument("fieldManager", "")
        if len(manager) > 128:
            raise bad_request("fieldManager: Too long: may not be more than 128 bytes")
        if apply_request and not manager:
            raise invalid_error(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [required("fieldManager", "is required for apply patch")],
            )
        return manager or default_manager(self.request.headers.get("User-Agent", ""))

    def _record_update(self, info: RequestInfo, old: JSONObject | None, new: JSONObject) -> None:
        record_update(
            old,
            new,
            manager=self._field_manager(apply_request=False),
            api_version=info.rt.api_version(info.version),
            now=now_rfc3339(),
        )

    async def _update(self, info: RequestInfo, user: UserInfo) -> None:
        assert info.name is not None
        body = self._body()
        dry_run = self._dry_run()
        self._check_type_meta(info, body)
        check_body(info.rt.kind, info.version, body, custom=info.rt.custom)
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != info.name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the "
                f"name on the URL ({info.name})"
            )
        meta["name"] = info.name
        if info.rt.namespaced:
            meta["namespace"] = info.namespace
        body["apiVersion"] = info.rt.api_version(info.version)
        body["kind"] = info.rt.kind
        self._field_validation(body)
        st = self._storage_type(info)
        old = self.sandbox.store.get(st, info.namespace, info.name)
        if old is None:
            raise not_found(info.rt, info.name)
        old_served = self._served(info, old)
        admitted = await self._admit(info, user, "UPDATE", body, old_served, dry_run=dry_run)
        self._record_update(info, old_served, admitted)
        stored = self.sandbox.store.update(
            st, info.namespace, info.name, to_storage(info.rt, admitted), dry_run=dry_run
        )
        self._send(200, self._served(info, stored))

    async def _patch(self, info: RequestInfo, user: UserInfo) -> None:
        assert info.name is not None
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in PATCH_TYPES:
            raise unsupported_media_type(content_type)
        patch = parse_patch_body(content_type, self.request.body or b"")
        dry_run = self._dry_run()
        is_apply = content_type == APPLY_PATCH
        force = self.get_query_argument("force", "").lower() == "true"
        if self.get_query_argument("force", "") and not is_apply:
            raise bad_request("force may only be set for apply patches")
        if is_apply and not isinstance(patch, dict):
            raise bad_request("an apply patch must be an object")
        if is_apply and (patch.get("metadata") or {}).get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil in an apply configuration")
        manager = self._field_manager(apply_request=is_apply)
        st = self._storage_type(info)
        store = self.sandbox.store
        for _attempt in range(10):
            current = store.get(st, info.namespace, info.name)
            if current is None:
                if not is_apply:
                    raise not_found(info.rt, info.name)
                # Server-side apply of a missing object creates it.
                await self._create_for_apply(info, user, patch, manager=manager)
                return
            served = self._served(info, current)
            api_version = info.rt.api_version(info.version)
            if is_apply:
                self._check_type_meta(info, patch)
                check_apply_config(info.rt.kind, self._group_version(info), patch)
                patched = apply_config(
                    served, patch, manager=manager, api_version=api_version,
                    now=now_rfc3339(), force=force,
                )  # fmt: skip
                check_applied(info.rt.kind, self._group_version(info), patch, patched)
            else:
                patched = apply_patch(content_type, clone(served), patch)
                check_patched(
                    info.rt.kind,
                    strategic=content_type == STRATEGIC_MERGE_PATCH,
                    patch=patch,
                    patched=patched,
                )
            self._check_type_meta(info, patched)
            meta = patched.get("metadata")
            if not isinstance(meta, dict) or meta.get("name") != info.name:
                raise bad_request("a patch may not change metadata.name")
            if info.rt.namespaced and meta.get("namespace") != info.namespace:
                raise bad_request("a patch may not change metadata.namespace")
            self._field_validation(patched)
            current_rv = current["metadata"]["resourceVersion"]
            explicit_rv = meta.get("resourceVersion") not in (None, current_rv)
            admitted = await self._admit(info, user, "UPDATE", patched, served, dry_run=dry_run)
            if not is_apply:
                record_update(
                    served, admitted, manager=manager, api_version=api_version, now=now_rfc3339()
                )
            body = to_storage(info.rt, admitted)
            if not explicit_rv:
                body["metadata"]["resourceVersion"] = current_rv
            try:
                stored = store.update(st, info.namespace, info.name, body, dry_run=dry_run)
            except StatusError as exc:
                if exc.reason == "Conflict" and not explicit_rv:
                    continue  # someone wrote in between: re-apply the patch, as kube does
                raise
            self._send(200, self._served(info, stored))
            return
        raise StatusError(
            409,
            "Conflict",
            f"Operation cannot be fulfilled on "
            f'{info.rt.qualified} "{info.name}": too many concurrent updates',
        )

    async def _create_for_apply(
        self, info: RequestInfo, user: UserInfo, config: JSONObject, *, manager: str
    ) -> None:
        dry_run = self._dry_run()
        self._check_type_meta(info, config)
        check_apply_config(info.rt.kind, self._group_version(info), config)
        body = apply_config(
            None, config, manager=manager, api_version=info.rt.api_version(info.version),
            now=now_rfc3339(), force=True,
        )  # fmt: skip
        check_applied(info.rt.kind, self._group_version(info), config, body)
        body.setdefault("metadata", {})["name"] = info.name
        if info.rt.namespaced:
            body["metadata"]["namespace"] = info.namespace
        body["apiVersion"] = info.rt.api_version(info.version)
        body["kind"] = info.rt.kind
        self._field_validation(body)
        validate_name(info.rt, info.name or "")
        refuse_resource_version(body)
        admitted = await self._admit(info, user, "CREATE", body, None, dry_run=dry_run)
        self._store_created(info, admitted, dry_run=dry_run)

    # -- virtual resources --

    async def _review(self, info: RequestInfo, user: UserInfo, body: JSONObject) -> None:
        self._check_type_meta(info, body)
        sb = self.sandbox
        if info.rt.plural == "tokenreviews":
            if not (body.get("spec") or {}).get("token"):
                raise invalid(info.rt, "", [("spec.token", "Required value")])
            result = await resolve(sb.review_token(clone(body)))
        elif info.rt.plural in ("subjectaccessreviews", "selfsubjectaccessreviews"):
            spec = body.get("spec") or {}
            if not spec.get("resourceAttributes") and not spec.get("nonResourceAttributes"):
                raise invalid(
                    info.rt,
                    "",
                    [
                        (
                            "spec.resourceAttributes",
                            "Invalid value: exactly one of nonResourceAttributes or "
                            "resourceAttributes must be specified",
                        )
                    ],
                )
            if info.rt.plural == "subjectaccessreviews" and not (
                spec.get("user") or spec.get("groups")
            ):
                raise invalid(
                    info.rt,
                    "",
                    [
                        (
                            "spec.user",
                            "Invalid value: at least one of user or group must be specified",
                        )
                    ],
                )
            result = await resolve(sb.review_access(clone(body), user))
        elif info.rt.plural == "selfsubjectrulesreviews":
            if not (body.get("spec") or {}).get("namespace"):
                raise invalid(info.rt, "", [("spec.namespace", "Required value")])
            result = await resolve(sb.review_rules(clone(body), user))
        elif info.rt.plural == "selfsubjectreviews":
            result = await resolve(sb.review_self(clone(body), user))
        else:  # pragma: no cover - the registry has no other virtual types
            raise server_not_found()
        out = complete_review(body, result)
        out["apiVersion"] = info.rt.api_version(info.version)
        out["kind"] = info.rt.kind
        self._send(201, out)

    async def _token_request(self, info: RequestInfo) -> None:
        assert info.name is not None and info.namespace is not None
        body = self._body() if self.request.body else {}
        sa_rt = self.sandbox.registry.by_ref(ResourceRef("", "serviceaccounts"))
        if self.sandbox.store.get(sa_rt, info.namespace, info.name) is None:
            raise not_found(sa_rt, info.name)
        result = await resolve(self.sandbox.issue_token(info.namespace, info.name, clone(body)))
        out = complete_review(body, result)
        out["apiVersion"] = "authentication.k8s.io/v1"
        out["kind"] = "TokenRequest"
        out.setdefault("metadata", {}).update(
            {
                "name": info.name,
                "namespace": info.namespace,
                "creationTimestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        out.setdefault("spec", {}).setdefault("audiences", [])
        self._send(201, out)
