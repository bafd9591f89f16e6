"""Kubernetes RBAC in miniature: may this identity do this verb on this resource?

The emulated API server authorizes every request that carries a bearer token
it issued for a service account (``ApiServer.token_for``) with the Roles,
ClusterRoles, RoleBindings and ClusterRoleBindings stored in it, exactly as
the RBAC authorizer does: a request is allowed if a binding whose subject
matches the identity refers to a role with a rule that covers it. Requests
without a token act as the cluster's administrator (the tests themselves, the
test kubelet).

``rules_allow(rules, ...)`` is the rule matcher alone, for a test that checks
a Role from deploy/ against the API calls a backend was seen making.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()

    @classmethod
    def service_account(cls, namespace: str, name: str) -> Identity:
        return cls(
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        )


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, in RBAC's terms."""

    verb: str  # get list watch create update patch delete deletecollection
    group: str
    resource: str  # the plural, with "/subresource" when there is one
    namespace: str | None
    name: str | None

    def describe(self, identity: Identity) -> str:
        where = f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        plural = self.resource.split("/")[0]
        return (
            f'{plural} is forbidden: User "{identity.user}" cannot {self.verb} resource "{self.resource}" '
            f'in API group "{self.group}"{where}'
        )


def _covers(values: Iterable[str] | None, wanted: str) -> bool:
    values = list(values or ())
    return "*" in values or wanted in values


def rules_allow(rules: Iterable[Mapping[str, Any]], attributes: Attributes) -> bool:
    for rule in rules:
        names = rule.get("resourceNames") or []
        if (
            _covers(rule.get("verbs"), attributes.verb)
            and _covers(rule.get("apiGroups"), attributes.group)
            and _covers(rule.get("resources"), attributes.resource)
            and (not names or attributes.name in names)
        ):
            return True
    return False


def _subject_matches(subject: Mapping[str, Any], identity: Identity, binding_namespace: str | None) -> bool:
    match subject.get("kind"):
        case "ServiceAccount":
            namespace = subject.get("namespace") or binding_namespace
            return identity.user == f"system:serviceaccount:{namespace}:{subject.get('name')}"
        case "User":
            return identity.user == subject.get("name")
        case "Group":
            return subject.get("name") in identity.groups
    return False


@dataclass(frozen=True)
class Policy:
    """The RBAC objects of the cluster at one moment."""

    roles: Mapping[tuple[str, str], Mapping[str, Any]]  # (namespace, name) -> Role
    cluster_roles: Mapping[str, Mapping[str, Any]]
    role_bindings: Iterable[Mapping[str, Any]]
    cluster_role_bindings: Iterable[Mapping[str, Any]]

    def allows(self, identity: Identity, attributes: Attributes) -> bool:
        for binding in self.cluster_role_bindings:
            if self._grants(binding, identity, attributes, None):
                return True
        if attributes.namespace is None:
            return False
        return any(
            binding["metadata"].get("namespace") == attributes.namespace
            and self._grants(binding, identity, attributes, attributes.namespace)
            for binding in self.role_bindings
        )

    def _grants(
        self, binding: Mapping[str, Any], identity: Identity, attributes: Attributes, namespace: str | None
    ) -> bool:
        if not any(_subject_matches(s, identity, namespace) for s in binding.get("subjects") or []):
            return False
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "Role":
            role = self.roles.get((namespace or "", ref.get("name", "")))
        else:
            role = self.cluster_roles.get(ref.get("name", ""))
        return role is not None and rules_allow(role.get("rules") or [], attributes)
