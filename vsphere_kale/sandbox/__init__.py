"""The sandbox: an in-memory Kubernetes API server for tests and the local playground.

The real ``kubernetes`` Python client and real ``kubectl`` talk to it over HTTP(S), exactly
as to kube-apiserver, so integration tests exercise the API contract rather than our
assumptions about it. Start one in-process with :func:`vsphere_kale.sandbox.testing.start_sandbox`
(pytest: the ``sandbox`` / ``sandbox_factory`` fixtures) or from the shell with
``vsphere-kale sandbox apiserver``.

What it emulates
----------------
- Discovery: ``/version`` (v1.24.17 for flavor ``psp``, v1.30.4 for ``psa``), ``/api``,
  ``/apis``, ``/api/v1``, ``/apis/<group>/<version>`` (plain APIGroupList/APIResourceList;
  no aggregated discovery), server-side Tables for ``kubectl get`` (kube's columns for
  PVCs, StorageClasses, Events, namespaces, bindings...; NAME/AGE otherwise), and a
  OpenAPI v3 (``/openapi/v3``) that makes kubectl hand field validation to the server, with
  a real PersistentVolumeClaim schema so ``kubectl explain pvc.spec`` works (``schemas.py``;
  other types have open schemas). ``/openapi/v2`` is JSON only (kubectl's protobuf request
  is 406).
- Resource types (``resources.py``): namespaces, pods (read-only, empty),
  persistentvolumeclaims, persistentvolumes, events (core/v1 and events.k8s.io/v1 over one
  storage, converted field by field), serviceaccounts (+ the ``token`` subresource:
  TokenRequest), secrets, configmaps, services, endpoints, storageclasses,
  roles/rolebindings/clusterroles/clusterrolebindings, leases,
  mutatingwebhookconfigurations, deployments, daemonsets and statefulsets (stored only: no
  workload controller), poddisruptionbudgets, networkpolicies,
  kubeflow.org profiles (v1 and v1beta1, one storage), and the create-only reviews
  tokenreviews, subjectaccessreviews, selfsubjectaccessreviews, selfsubjectrulesreviews
  (``kubectl auth can-i --list``), selfsubjectreviews (``kubectl auth whoami``). Flavor ``psp`` adds
  policy/v1beta1 podsecuritypolicies.
- Verbs: get, list (``limit``/``continue`` pages over a consistent snapshot, kube's token
  format, ``remainingItemCount``, 410 Expired with an inconsistent-continue token once the
  snapshot is gone -- ``paging.py``; labelSelector ``= == != in notin exists !key``; fieldSelector
  ``metadata.name``/``metadata.namespace`` plus kube's per-type fields for events,
  namespaces, secrets, PVCs; anything else is 400), watch (``?watch=true`` and ``/watch/``
  paths; from a resourceVersion out of a bounded history, default 10,000 events; absent or
  ``"0"`` starts with ADDED for the current state; too old gives one ERROR event with a 410
  Expired Status; ``allowWatchBookmarks``; ``timeoutSeconds``; with a selector, an object
  entering or leaving the selection is reported ADDED/DELETED like the watch cache does),
  create (``generateName``, uid, creationTimestamp, generation, one global resourceVersion
  counter), update (409 Conflict on a stale resourceVersion; a no-op keeps the version),
  patch, delete (finalizers hold an object with a deletionTimestamp until removed),
  deletecollection (DeleteOptions from the body or query; ``propagationPolicy`` other than
  Orphan/Background/Foreground is 422), ``dryRun=All`` (validated and admitted, nothing
  stored, no version used), ``fieldValidation=Strict|Warn|Ignore`` on top-level fields only.
- Patches (``patching.py``): JSON merge patch; JSON patch (a failed ``test`` is 422);
  strategic merge patch as the kubernetes client and ``kubectl apply/label/annotate`` send it
  (maps merge, ``null`` deletes, ``$patch: replace|delete``, lists merged by key for
  containers/env/volumes/volumeMounts/ports/webhooks/imagePullSecrets/ownerReferences/
  conditions, ``metadata.finalizers`` as a set, ``$deleteFromPrimitiveList``,
  ``$setElementOrder``, ``$retainKeys``; other lists are replaced; unknown directives are
  422); ``application/apply-patch+yaml`` is server-side apply (``apply.py``): managedFields
  (FieldsV1) on every write, conflicts between managers (409, ``force=true``), pruning of
  fields a manager stopped applying; every list is atomic and status is not tracked.
- Impersonation (``impersonation.py``): Impersonate-User/-Group/-Uid/-Extra-* each checked
  with verb ``impersonate`` in RBAC, then the request runs as that user; refusals worded as
  kube 1.36's constrained impersonation (whose own grants are not evaluated).
- Decoding (``decoding.py``): a value of the wrong type in a typed field (ObjectMeta's
  name/labels/annotations, ConfigMap ``data``/``binaryData``, Secret ``data``/``stringData``)
  or a Secret value that is not base64 is refused in kube's words for each path: create and
  update 400 (``cannot be handled as a ConfigMap: json: cannot unmarshal bool ...``), merge,
  JSON and strategic merge patch 422 on ``patch``, server-side apply 500; nulls, empty maps,
  key order and base64 come back as kube serves them.
- Validation and built-in admission (``validation.py``): PVC spec (access modes,
  ``resources[storage]`` required) and ``ValidatePersistentVolumeClaimUpdate``'s immutability,
  422 with kube's messages and causes; DefaultStorageClass admission before the webhooks.
- Namespaces: created Active with the ``kubernetes.io/metadata.name`` label and the
  ``kubernetes`` finalizer; deleting one marks it Terminating (new content is refused with
  403), then a namespace controller removes its content shortly after, waits for objects
  held by finalizers, and removes the namespace.
- Errors are metav1.Status objects with kube's reasons, codes and message formats
  (NotFound, AlreadyExists, Conflict, Invalid, Forbidden, Unauthorized, Expired/410,
  TooManyRequests, BadRequest, MethodNotAllowed, UnsupportedMediaType, InternalError), keys
  in kube's order; tests/differential holds them to kube-apiserver 1.36.
- Request bodies in JSON, and the protobuf bodies kubectl's generators send for a few kinds
  (``protobuf.py``). Responses are always JSON.
- Policy through hooks (``server.Sandbox``): authentication, RBAC authorization and the
  escalation check, mutating admission webhooks (warnings become ``Warning: 299`` headers),
  TokenReview/SubjectAccessReview/TokenRequest, in-process controllers (the Kubeflow
  profile controller). Their types and permissive defaults are in ``hooks.py``, their
  logic in ``authn.py``, ``rbac.py`` (with ``rbac_rules.py``, ``rbac_reviews.py``) and
  ``webhooks.py`` (with the pure ``webhooks_review.py``); the Kubeflow profile controller and
  the seed data are the playground's (``vsphere_kale.playground``).
- The request handler is a stack, one module per concern: ``handler_base.py`` (parsing,
  answers), ``handler_reads.py``, ``handler_writes.py``, ``handler_deletes.py``,
  ``handler_access.py`` (authn, impersonation, authz), then ``server.py`` (dispatch,
  discovery, ``build_sandbox``). The store is ``store.py`` (writes) on ``store_base.py``
  (objects, watches, listeners) with ``store_objects.py`` (values, kube's defaults); the
  types are ``resources.py`` with ``statuses.py`` (metav1.Status errors) and ``conversion.py``.
- Fault injection (``faults.py``) and ``Sandbox.close_watches()`` for reliability tests.

What it does not
----------------
No pods (``pods`` is served read-only and always empty, so ``kubectl describe pvc`` works;
writing one is 405), no kubelet, no scheduler, no storage provisioning (PVCs stay Pending),
no garbage collector (ownerReferences are stored, not acted on; Orphan and Foreground
deletes remove the object at once), no validating webhooks, no status subresources (a PUT
writes ``status`` too, and ``status`` is kept on create), no schema validation beyond
names, labels, top-level fields, the decoder's typed fields and PVCs, SSA without associative
lists, no protobuf responses, no aggregated discovery,
no ``sendInitialEvents`` (refused with 422, as a 1.30 server without the WatchList feature
gate does). Unsupported requests fail with a clear Status, never silently. Every accepted
difference from kube-apiserver is listed in tests/differential/ACCEPTED_DIFFERENCES.yaml.
"""
