"""Attribute every served request to the cloud that really served it, and judge it.

Attribution, strongest source first:
  ledger       the mock fleet's own record of serving the request (ground truth)
  fingerprint  the cloud's vendor response headers (harness.protocols.fingerprint)
  declared     the cloud the profile declares for an external endpoint
  mock-header  x-mock-cloud without vendor headers
A request that reached a server but cannot be attributed is itself a violation wherever its
rule restricts clouds: a gate that cannot see where a call went must not pass it.

Violation kinds:
  cloud                 served on a cloud (or region) the matching rule does not allow
  attestation_mismatch  vendor headers claim one cloud, the ledger says another (e.g. a
                        gateway copying Azure headers onto another cloud's response)
  unattributed          served, but no source says where, under a restricting rule
  served_twice          the ledgers hold more than one serving of one request id
  affinity              a session turn under an affinity rule (``state-holder``) served by another
                        backend than the session's earlier turns, or answered "state not found"
                        (``previous_response_not_found`` and friends): its state was elsewhere
  not_sent_by_harness   a ledger row whose request id the harness never sent (a gateway
                        inventing or re-issuing calls); counted, not listed per record
Reconciliation compares client records with the ledgers: every request sent appears once,
none appears that the harness did not send. A session's set-up calls (``<turn-0 id>/conversation``)
are the harness's own and are counted apart.

A backend is the ledger's endpoint when the mocks ran, else the attributed cloud and region.
"""

from __future__ import annotations

import re
from typing import Any, Final

import pandas as pd

from harness.compliance.classify import model_family, request_class
from harness.compliance.policy import CompiledPolicy

COMPLIANCE_SCHEMA_VERSION: Final = 2
MAX_LISTED: Final = 1000
SETUP_SUFFIX: Final = "/conversation"  # a session's set-up call: <turn-0 request id>/conversation


OPTIONAL_COLUMNS: Final = ("session_id", "turn", "error_detail")  # absent from hand-made frames


def _attribute(records: pd.DataFrame, ledger: pd.DataFrame | None, declared: dict[str, str]) -> pd.DataFrame:
    missing = {c: None for c in OPTIONAL_COLUMNS if c not in records.columns}
    if missing:
        records = records.assign(**missing)
    df = records[
        [
            "request_id",
            "scenario",
            "endpoint",
            "deployment",
            "api",
            "model",
            "tenant",
            "sold_through",
            "store",
            "previous_response_id",
            "session_id",
            "turn",
            "error_detail",
            "status",
            "outcome",
            "fp_cloud",
            "fp_region",
            "mock_cloud",
            "mock_region",
        ]
    ].copy()
    df["ledger_cloud"] = None
    df["ledger_region"] = None
    df["ledger_endpoint"] = None
    df["ledger_rows"] = 0
    df["ledger_attempts"] = 0
    df["ledger_elsewhere"] = None
    if ledger is not None and len(ledger):
        rows = ledger.dropna(subset=["request_id"])
        if "endpoint" not in rows.columns:  # a hand-made ledger: the backend is cloud/region then
            rows = rows.assign(endpoint=None)
        if "status" not in rows.columns:
            rows = rows.assign(status=200)
        # A serving answered the request; a refusal (429, 5xx, or no answer at all: 499) did not,
        # but the request still reached that backend. The serving row attributes the request
        # (the first row when none served it); servings count for served_twice; every row's
        # cloud is judged (a request sent to a forbidden cloud is a misroute even if refused).
        status = rows["status"]
        serving = (status != 429) & (status < 499)
        # the row that produced the answer the client got (its response id) comes first: a request
        # served twice is attributed to where its answer, and so its state, came from
        answered = pd.Series(False, index=rows.index)
        if "response_id" in rows.columns and "response_id" in records.columns:
            got = records.dropna(subset=["response_id"]).set_index("request_id")["response_id"]
            got = got[~got.index.duplicated()]
            answered = rows["response_id"].notna() & (rows["request_id"].map(got) == rows["response_id"])
        rows = rows.assign(_serving=serving, _answered=answered).sort_values(
            ["_answered", "_serving"], ascending=False, kind="stable"
        )
        first = rows.groupby("request_id", sort=False).agg(
            ledger_cloud=("cloud", "first"),
            ledger_region=("region", "first"),
            ledger_endpoint=("endpoint", "first"),
            ledger_rows=("_serving", "sum"),
            ledger_attempts=("cloud", "size"),
        )
        df = df.drop(
            columns=["ledger_cloud", "ledger_region", "ledger_endpoint", "ledger_rows", "ledger_attempts"]
        ).merge(first, how="left", left_on="request_id", right_index=True)
        df["ledger_rows"] = df["ledger_rows"].fillna(0).astype("int64")
        df["ledger_attempts"] = df["ledger_attempts"].fillna(0).astype("int64")
        multi = df.loc[df["ledger_attempts"] > 1, "request_id"]
        if len(multi):  # rare (failover, duplication): the other backends each request reached
            others = rows[rows["request_id"].isin(set(multi))]
            pairs = others.groupby("request_id", sort=False)[["cloud", "region"]].apply(
                lambda g: sorted(set(zip(g["cloud"], g["region"], strict=True)))
            )
            df["ledger_elsewhere"] = df["request_id"].map(pairs)
    in_ledger = df["ledger_attempts"] > 0
    df["served"] = in_ledger | (df["status"] > 0)
    declared_cloud = df["endpoint"].map(declared)

    cloud = pd.Series(None, index=df.index, dtype="object")
    region = pd.Series(None, index=df.index, dtype="object")
    source = pd.Series("unattributed", index=df.index, dtype="object")
    for name, c, r, mask in (
        ("mock-header", df["mock_cloud"], df["mock_region"], df["mock_cloud"].notna()),
        ("declared", declared_cloud, pd.Series(None, index=df.index), declared_cloud.notna()),
        ("fingerprint", df["fp_cloud"], df["fp_region"], df["fp_cloud"].notna()),
        ("ledger", df["ledger_cloud"], df["ledger_region"], in_ledger),
    ):  # weakest first: each stronger source overwrites
        cloud = cloud.where(~mask, c)
        region = region.where(~mask, r)
        source = source.where(~mask, name)
    df["served_cloud"] = cloud
    df["served_region"] = region
    df["attribution"] = source
    fp_known = df["fp_cloud"].notna()
    df["attestation_mismatch"] = in_ledger & fp_known & (df["fp_cloud"] != df["ledger_cloud"])
    return df


def _decide(df: pd.DataFrame, policy: CompiledPolicy) -> pd.DataFrame:
    keys = ["api", "store", "chained", "model", "tenant", "sold_through", "served_cloud", "served_region"]
    df["chained"] = df["previous_response_id"].notna()
    combos = df[keys].astype("object").where(df[keys].notna(), None).drop_duplicates()
    rows = []
    for api, store, chained, model, tenant, sold, cloud, region in combos.itertuples(index=False):
        cls = request_class(api, store, "chained" if chained else None)
        family = model_family(model)
        decision = policy.decide(cls, family, api, tenant, sold, cloud, region)
        rule = policy.rule(cls, family, api, tenant, sold)
        restricting = rule is not None and "*" not in rule.allow_clouds
        rows.append((cls, family, decision.rule_id or "(default)", decision.allowed, restricting))
    decided = combos.assign(
        request_class=[r[0] for r in rows],
        model_family=[r[1] for r in rows],
        rule=[r[2] for r in rows],
        allowed=[r[3] for r in rows],
        restricting=[r[4] for r in rows],
    )
    key_df = df[keys].astype("object").where(df[keys].notna(), None)
    merged = key_df.merge(decided, on=keys, how="left")
    for col in ("request_class", "model_family", "rule", "allowed", "restricting"):
        df[col] = merged[col].to_numpy()
    return df


# What a backend answers when a chained call reaches it without the state (OpenAI/Azure codes)
STATE_NOT_FOUND: Final = re.compile(
    r"previous_response_not_found|conversation_not_found|response_not_found|No response found|"
    r"Conversation with id .* not found",
    re.IGNORECASE,
)


def _affinity(frame: pd.DataFrame, policy: CompiledPolicy) -> pd.Series:
    """True for session turns under a ``state-holder`` rule served away from their state."""
    holder_rules = {r.id for r in policy.policy.rules if r.affinity == "state-holder"}
    out = pd.Series(False, index=frame.index)
    scoped = frame["session_id"].notna() & frame["rule"].isin(holder_rules) & frame["served"]
    if not scoped.any():
        return out
    sub = frame.loc[scoped]
    backend = sub["ledger_endpoint"].where(
        sub["ledger_endpoint"].notna(),
        sub["served_cloud"].fillna("?").astype(str) + "/" + sub["served_region"].fillna("?").astype(str),
    )
    order = sub.assign(_backend=backend).sort_values(["session_id", "turn"], kind="stable")
    first = order.groupby("session_id", sort=False)["_backend"].transform("first")
    moved = order["_backend"] != first
    state_gone = order["error_detail"].fillna("").str.contains(STATE_NOT_FOUND)
    lost = order["previous_response_id"].notna() & state_gone
    out.loc[order.index] = (moved | lost).to_numpy()
    return out


def _reached_forbidden(frame: pd.DataFrame, policy: CompiledPolicy) -> pd.Series:
    """True where a request reached (even if refused there) a cloud or region its rule forbids."""
    out = pd.Series(False, index=frame.index)
    has = frame["ledger_elsewhere"].notna()
    for i in frame.index[has]:
        r = frame.loc[i]
        store = None if pd.isna(r["store"]) else bool(r["store"])
        cls = request_class(r["api"], store, "chained" if r["chained"] else None)
        family = model_family(r["model"])
        api, tenant, sold = r["api"], r["tenant"], r["sold_through"]
        for cloud, region in r["ledger_elsewhere"]:
            if not policy.decide(cls, family, api, tenant, sold, cloud, region).allowed:
                out.loc[i] = True
                break
    return out


def _violation_kind(frame: pd.DataFrame, policy: CompiledPolicy | None = None) -> pd.Series:
    """The violation kind of each row of an attributed, decided frame (None: no violation)."""
    kind = pd.Series(None, index=frame.index, dtype="object")
    unattributed = (frame["attribution"] == "unattributed") & frame["restricting"]
    forbidden = ~frame["allowed"]
    if policy is not None and "ledger_elsewhere" in frame.columns:
        forbidden = forbidden | _reached_forbidden(frame, policy)
    kind = kind.where(~(forbidden & ~unattributed), "cloud")
    kind = kind.where(~unattributed, "unattributed")
    if policy is not None:
        kind = kind.where(~_affinity(frame, policy), "affinity")
    kind = kind.where(~frame["attestation_mismatch"], "attestation_mismatch")
    return kind.where(~(frame["ledger_rows"] > 1), "served_twice")


ATTRIBUTION_COLUMNS: Final = (
    "served",
    "served_cloud",
    "served_region",
    "attribution",
    "request_class",
    "model_family",
    "rule",
    "kind",
)


def attribute_records(
    records: pd.DataFrame,
    ledger: pd.DataFrame | None,
    policy: CompiledPolicy,
    *,
    declared_clouds: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The per-request frame ``judge`` works from, indexed like ``records``.

    Columns (``ATTRIBUTION_COLUMNS``): ``served`` (reached a server), ``served_cloud`` and
    ``served_region`` (strongest attribution source, None if unknown), ``attribution`` (that
    source), ``request_class``, ``model_family``, ``rule`` (the rule id that decided, or
    ``"(default)"``) and ``kind``: the violation kind, None for unserved and compliant rows.
    Counting ``kind`` over this frame gives ``judge``'s ``violations_total`` and ``by_kind``.
    """
    df = _decide(_attribute(records, ledger, declared_clouds or {}), policy)
    kind = _violation_kind(df, policy).where(df["served"].to_numpy(dtype=bool), None)
    out = df.assign(kind=kind)[list(ATTRIBUTION_COLUMNS)]
    out.index = records.index
    return out


def _serving_mask(status: pd.Series | None, index: pd.Index) -> pd.Series:
    if status is None:
        return pd.Series(True, index=index)
    return (status != 429) & (status < 499)


def judge(
    records: pd.DataFrame,
    ledger: pd.DataFrame | None,
    policy: CompiledPolicy,
    *,
    declared_clouds: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Judge a finished run from its records (and the mocks' ledgers, when they ran).

    Works from the run directory's data alone, so a run can be re-judged against another policy.
    """
    df = _attribute(records, ledger, declared_clouds or {})
    df = _decide(df, policy)
    kind = _violation_kind(df, policy).where(df["served"].to_numpy(dtype=bool), None)
    served = df[df["served"]]
    violations = served.assign(kind=kind[df["served"]])[kind[df["served"]].notna()]

    recon: dict[str, Any] = {"ledger_available": ledger is not None}
    not_sent = 0
    if ledger is not None:
        sent_ids = set(records.loc[records["sent_ns"].notna(), "request_id"])
        ledger_ids = ledger["request_id"].dropna()
        ledger_status = ledger.loc[ledger_ids.index, "status"] if "status" in ledger.columns else None
        base = ledger_ids.str.removesuffix(SETUP_SUFFIX)
        setup = ledger_ids.str.endswith(SETUP_SUFFIX) & base.isin(sent_ids)
        not_sent = int((~ledger_ids.isin(sent_ids) & ~setup).sum())
        recon.update(
            {
                "sent": len(sent_ids),
                "ledger_rows": len(ledger),
                "ledger_rows_without_request_id": int(ledger["request_id"].isna().sum()),
                "session_setup_calls": int(setup.sum()),
                "sent_not_in_ledger": len(sent_ids - set(ledger_ids)),
                "in_ledger_not_sent": not_sent,
                "served_more_than_once": int(
                    ledger_ids[~setup & _serving_mask(ledger_status, ledger_ids.index)].duplicated().sum()
                ),
                "refused_attempts": int((~_serving_mask(ledger_status, ledger_ids.index)).sum()),
            }
        )
        recon["consistent"] = recon["in_ledger_not_sent"] == 0 and recon["served_more_than_once"] == 0

    def counts(frame: pd.DataFrame, col: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in frame[col].fillna("unknown").value_counts().sort_index().items()}

    listed = violations.head(MAX_LISTED)
    by_kind = counts(violations, "kind")
    if not_sent:
        by_kind["not_sent_by_harness"] = not_sent
    total = len(violations) + not_sent
    return {
        "schema_version": COMPLIANCE_SCHEMA_VERSION,
        "policy": policy.policy.name,
        "rules": [rule.id for rule in policy.policy.rules],  # policy order; reports list every rule
        "verdict": "pass" if total == 0 else "fail",
        "requests": len(df),
        "judged": len(served),
        "unserved": len(df) - len(served),
        "violations_total": total,
        "violation_rate": (total / len(served)) if len(served) else 0.0,
        "by_kind": by_kind,
        "by_rule": counts(violations, "rule"),
        "violations_by_cloud": counts(violations, "served_cloud"),
        "served_by_cloud": counts(served, "served_cloud"),
        "served_by_class": counts(served, "request_class"),
        "by_class": {
            str(cls): {
                "served": int(n),
                "violations": int((violations["request_class"] == cls).sum()),
                "rate": float((violations["request_class"] == cls).sum() / n) if n else 0.0,
            }
            for cls, n in served["request_class"].fillna("unknown").value_counts().sort_index().items()
        },
        "attribution_sources": counts(served, "attribution"),
        "reconciliation": recon,
        "violations": [
            {
                "request_id": r.request_id,
                "kind": r.kind,
                "rule": r.rule,
                "class": r.request_class,
                "model_family": r.model_family,
                "scenario": r.scenario,
                "session_id": None if pd.isna(r.session_id) else str(r.session_id),
                "turn": None if pd.isna(r.turn) else int(r.turn),
                "endpoint": r.endpoint,
                "served_cloud": r.served_cloud,
                "served_region": r.served_region,
                "fingerprint_cloud": r.fp_cloud,
                "attribution": r.attribution,
            }
            for r in listed.itertuples(index=False)
        ],
        "violations_listed": len(listed),
    }
