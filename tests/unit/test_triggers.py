"""Webhook parsing, routing and debouncing (pure logic: a fake clock, no server)."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from labelflow.infra.label_studio_env import banned_subnets_except_loopback_host
from labelflow.orchestration import STAGES, DeployError, parse_every, read_templates
from labelflow.tasks.spec import parse_spec
from labelflow.triggers import (
    Debouncer,
    EventListener,
    ObjectEvent,
    Route,
    Routes,
    build_routes,
    parse_label_studio_event,
    parse_s3_event,
    parse_seaweedfs_event,
)

ROOT = Path(__file__).resolve().parents[2]


def seaweed(event_type: str, key: str, directory: bool = False) -> dict:
    entry = {"name": key.rsplit("/", 1)[-1], "is_directory": directory} if directory else {"name": key}
    return {"event_type": event_type, "key": key, "message": {"new_entry": entry}}


def test_seaweedfs_events_keep_only_new_files_in_buckets() -> None:
    assert parse_seaweedfs_event(seaweed("create", "/buckets/raw/a/中文 x.txt")) == [ObjectEvent("raw", "a/中文 x.txt")]
    assert parse_seaweedfs_event(seaweed("update", "/buckets/raw/b.png")) == [ObjectEvent("raw", "b.png")]
    assert parse_seaweedfs_event(seaweed("create", "/buckets/raw/a", directory=True)) == []
    assert parse_seaweedfs_event({"event_type": "delete", "key": "/buckets/raw/a.txt", "message": {}}) == []
    assert parse_seaweedfs_event(seaweed("create", "/buckets/.system/owners/admin")) == []
    assert parse_seaweedfs_event(seaweed("create", "/buckets/raw/.uploads/x/0001.part")) == []
    assert parse_seaweedfs_event(seaweed("create", "/topics/x")) == []


def test_s3_events_from_minio_and_sns() -> None:
    record = {
        "eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": "raw"}, "object": {"key": "a/b+c%E4%B8%AD.txt"}},
    }
    removed = {"eventName": "s3:ObjectRemoved:Delete", "s3": {"bucket": {"name": "raw"}, "object": {"key": "x"}}}
    assert parse_s3_event({"Records": [record, removed]}) == [ObjectEvent("raw", "a/b c中.txt")]
    aws = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "raw"}, "object": {"key": "k.png"}}}
    sns = {"Type": "Notification", "Message": json.dumps({"Records": [aws]})}
    assert parse_s3_event(sns) == [ObjectEvent("raw", "k.png")]
    assert parse_s3_event({"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns"}) == []


def test_label_studio_events_name_the_project() -> None:
    assert parse_label_studio_event({"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {}}) == 7
    assert parse_label_studio_event({"action": "ANNOTATION_UPDATED", "task": {"project": 9}}) == 9
    assert parse_label_studio_event({"action": "ANNOTATIONS_DELETED", "annotations": [{"project": 3}]}) == 3
    assert parse_label_studio_event({"action": "TASKS_CREATED", "project": {"id": 7}}) is None


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_debouncer(
    window: float, states: dict[UUID, str], max_keys: int = 1000, key_updates: list[tuple] | None = None
) -> tuple[Debouncer, FakeClock, list[tuple]]:
    """A debouncer on a fake clock; `submitted` gets (project, when, source, run id, keys) per run created, and
    `key_updates` (run id, keys) per change of a run's keys."""
    clock = FakeClock()
    submitted: list[tuple] = []
    updates = key_updates if key_updates is not None else []

    def submit(route: Route, when: datetime, source: str, keys: list[str] | None = None) -> UUID:
        run_id = uuid4()
        submitted.append((route.project, when, source, run_id, keys))
        states[run_id] = "SCHEDULED"
        return run_id

    def set_keys(run_id: UUID, keys: list[str] | None) -> bool:
        updates.append((run_id, keys))
        return run_id in states  # False: the run was deleted

    base = datetime(2026, 1, 1, tzinfo=UTC)
    debouncer = Debouncer(
        window,
        submit,
        states.get,
        clock=clock,
        now=lambda: base + timedelta(seconds=clock.t),
        set_keys=set_keys,
        max_keys=max_keys,
    )
    return debouncer, clock, submitted


def route(name: str) -> Route:
    return Route(uuid4(), f"labelflow-ingest/{name}", f"/specs/{name}.yaml", name)


def test_a_burst_of_10000_events_becomes_a_handful_of_runs() -> None:
    states: dict[UUID, str] = {}
    debouncer, clock, submitted = make_debouncer(15.0, states)
    reviews = route("reviews")
    for i in range(10_000):  # 400 uploads a second for 25 s; each run starts (RUNNING) when it is due
        clock.t = 1000.0 + i / 400
        for _project, when, _, run_id, _keys in submitted:
            if datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=clock.t) >= when:
                states[run_id] = "RUNNING"
        debouncer.offer(reviews, "seaweedfs")
    assert debouncer.events == 10_000
    assert len(submitted) == 2  # t=0 (due at 15 s) and t=15 s (due at 30 s)
    assert submitted[0][1] == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=1015)


def test_no_pile_up_while_the_worker_is_down_and_projects_are_independent() -> None:
    states: dict[UUID, str] = {}
    debouncer, clock, submitted = make_debouncer(10.0, states)
    a, b = route("a"), route("b")
    assert debouncer.offer(a) is not None
    assert debouncer.offer(b) is not None  # another project gets its own run at once
    clock.t += 3600  # an hour later the first run still waits for a worker: events join it
    assert debouncer.offer(a) is None
    first = submitted[0][3]
    states[first] = "COMPLETED"
    assert debouncer.offer(a) is not None  # once it ran, the next event schedules the next run
    assert len(submitted) == 3


def test_a_debounced_run_reads_the_keys_of_every_event_it_absorbed() -> None:
    states: dict[UUID, str] = {}
    updates: list[tuple] = []
    debouncer, clock, submitted = make_debouncer(15.0, states, key_updates=updates)
    reviews = route("reviews")
    assert debouncer.offer(reviews, "seaweedfs", key="s3://raw/texts/0.txt") is not None
    for i in (3, 1, 2, 0):  # absorbed: no API call per event ...
        clock.t += 1
        assert debouncer.offer(reviews, "seaweedfs", key=f"s3://raw/texts/{i}.txt") is None
    assert [s[4] for s in submitted] == [["s3://raw/texts/0.txt"]] and updates == []
    assert debouncer.sync() == 0  # ... one update of the waiting run for all of them
    assert updates == [(submitted[0][3], [f"s3://raw/texts/{i}.txt" for i in range(4)])]
    debouncer.sync()
    assert len(updates) == 1, "nothing new: no second update"


def test_keys_absorbed_after_their_run_started_get_a_run_of_their_own() -> None:
    states: dict[UUID, str] = {}
    updates: list[tuple] = []
    debouncer, clock, submitted = make_debouncer(15.0, states, key_updates=updates)
    reviews = route("reviews")
    debouncer.offer(reviews, "seaweedfs", key="s3://raw/a.txt")
    clock.t += 14.9
    debouncer.offer(reviews, "seaweedfs", key="s3://raw/b.txt")
    states[submitted[0][3]] = "RUNNING"  # the worker started it (with a.txt alone) before the update landed
    assert debouncer.sync() == 1
    assert [s[4] for s in submitted] == [["s3://raw/a.txt"], ["s3://raw/b.txt"]]
    clock.t += 1
    assert debouncer.offer(reviews, "seaweedfs", key="s3://raw/c.txt") is None  # joins the new run
    debouncer.sync()
    assert updates[-1] == (submitted[1][3], ["s3://raw/b.txt", "s3://raw/c.txt"])


def test_keys_of_a_run_deleted_before_it_started_all_go_to_a_new_run() -> None:
    states: dict[UUID, str] = {}
    debouncer, _clock, submitted = make_debouncer(15.0, states)
    reviews = route("reviews")
    debouncer.offer(reviews, "seaweedfs", key="s3://raw/a.txt")
    debouncer.offer(reviews, "seaweedfs", key="s3://raw/b.txt")
    del states[submitted[0][3]]  # deleted from the UI
    assert debouncer.sync() == 1
    assert submitted[1][4] == ["s3://raw/a.txt", "s3://raw/b.txt"]


def test_more_keys_than_a_run_carries_and_events_without_keys_mean_the_full_listing() -> None:
    states: dict[UUID, str] = {}
    updates: list[tuple] = []
    debouncer, _clock, submitted = make_debouncer(15.0, states, max_keys=3, key_updates=updates)
    reviews, project = route("reviews"), route("collect-me")
    for i in range(4):
        debouncer.offer(reviews, "seaweedfs", key=f"s3://raw/{i}.txt")
    debouncer.sync()
    assert updates == [(submitted[0][3], None)]  # a bulk upload: listing the source is the cheaper way
    debouncer.offer(reviews, "seaweedfs", key="s3://raw/9.txt")
    debouncer.sync()
    assert len(updates) == 1, "a full listing stays a full listing"
    debouncer.offer(project, "label-studio")
    assert submitted[-1][4] is None  # collect runs take no keys


def make_listener(routes_by_call: list[Routes | Exception]) -> tuple[EventListener, FakeClock, list[tuple], list]:
    """A listener on a fake clock whose successive route loads return (or raise) the given values."""
    debouncer, clock, submitted = make_debouncer(15.0, {})
    loads: list[float] = []

    def load_routes() -> Routes:
        loads.append(clock.t)
        value = routes_by_call[min(len(loads), len(routes_by_call)) - 1]
        if isinstance(value, Exception):
            raise value
        return value

    listener = EventListener("token", debouncer, load_routes, refresh_seconds=30.0, clock=clock)
    listener.refresh(force=True)
    return listener, clock, submitted, loads


def upload(listener: EventListener, bucket: str, key: str) -> None:
    listener.accept("seaweedfs", seaweed("create", f"/buckets/{bucket}/{key}"))


def test_an_upload_right_after_a_refresh_still_finds_a_deployment_registered_just_before_it() -> None:
    # The race seen on CI: the periodic refresh ran a moment before `labelflow deploy` registered the spec,
    # and the uploads that followed within the 2 s refresh limit were counted as unrouted and lost.
    reviews = route("reviews")
    deployed = Routes(sources=[("raw", "texts/", reviews)])
    listener, clock, submitted, loads = make_listener([Routes(), deployed])
    clock.t += 0.5  # deploy, then 60 uploads, all within 2 s of the refresh that predates the deployment
    for i in range(60):
        upload(listener, "raw", f"texts/{i}.txt")
    for _ in range(60):
        listener.step(timeout=0)
    assert submitted == [] and listener.health()["parked"] == 60 and len(loads) == 1  # waiting, not lost
    clock.t += 1.6  # the 2 s limit has passed: one reload covers them all
    listener.step(timeout=0)
    assert len(loads) == 2 and listener.health()["parked"] == 0
    assert [s[0] for s in submitted] == ["reviews"]  # one debounced run for the burst
    assert listener.counts == {
        "received": 60,
        "rejected": 0,
        "unrouted": 0,
        "runs": 1,
        "errors": 0,
        "dropped": 0,
        "reloads": 2,
    }


def test_uploads_nowhere_are_unrouted_after_one_reload_and_events_wait_while_prefect_is_down() -> None:
    reviews = route("reviews")
    listener, clock, submitted, loads = make_listener(
        [Routes(), ConnectionRefusedError("prefect down"), Routes(sources=[("raw", "", reviews)])]
    )
    upload(listener, "mlflow", "artifacts/model.pkl")
    upload(listener, "raw", "a.txt")
    listener.step(timeout=0)
    listener.step(timeout=0)
    clock.t += 2.5
    listener.step(timeout=0)  # the reload fails: nothing is decided, nothing lost
    assert listener.health()["parked"] == 2 and listener.counts["errors"] == 1 and submitted == []
    clock.t += 2.5
    listener.step(timeout=0)
    assert listener.health()["parked"] == 0 and [s[0] for s in submitted] == ["reviews"]
    assert listener.counts["unrouted"] == 1  # the MLflow artifact: no spec reads that bucket
    upload(listener, "mlflow", "artifacts/other.pkl")  # routes are newer than nothing: decided against them
    listener.step(timeout=0)
    assert listener.counts["unrouted"] == 1 and listener.health()["parked"] == 1  # ... only once reloaded
    assert len(loads) == 3


def test_the_listener_gives_the_run_the_uris_its_object_events_name() -> None:
    reviews = route("reviews")
    listener, clock, submitted, _loads = make_listener([Routes(sources=[("raw", "texts/", reviews)])])
    updates: list[tuple] = []
    listener.debouncer._set_keys = lambda run_id, keys: updates.append((run_id, keys)) or True
    for key in ("texts/b.txt", "texts/中文 a.txt", "other/c.txt"):
        upload(listener, "raw", key)
    listener.accept(
        "s3",
        {
            "Records": [
                {
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {"bucket": {"name": "raw"}, "object": {"key": "texts/d+e.txt"}},
                }
            ]
        },
    )
    for _ in range(4):
        listener.step(timeout=0)
    assert [(s[0], s[4]) for s in submitted] == [("reviews", ["s3://raw/texts/b.txt"])]
    clock.t += listener.sync_seconds
    listener.step(timeout=0)
    assert updates == [
        (submitted[0][3], ["s3://raw/texts/b.txt", "s3://raw/texts/d e.txt", "s3://raw/texts/中文 a.txt"])
    ]
    assert listener.counts["runs"] == 1 and listener.health()["parked"] == 1  # other/c.txt: no route yet


class FakePrefectClient:
    """The two calls PrefectRuns makes to create a run and change its keys."""

    def __init__(self) -> None:
        self.created: list[dict] = []
        self.parameters: dict[UUID, dict] = {}

    def create_flow_run_from_deployment(self, deployment_id: UUID, **options: object) -> object:
        run_id = uuid4()
        self.created.append({"deployment_id": deployment_id, **options})
        self.parameters[run_id] = {"spec_path": "/specs/reviews.yaml", **(options.get("parameters") or {})}
        return type("Run", (), {"id": run_id})()

    def read_flow_run(self, run_id: UUID) -> object:
        return type("Run", (), {"id": run_id, "parameters": dict(self.parameters[run_id])})()

    def update_flow_run(self, run_id: UUID, parameters: dict) -> None:
        self.parameters[run_id] = parameters


def test_prefect_runs_carry_the_keys_as_the_ingest_flow_parameter() -> None:
    from labelflow.flows.ingest import ingest
    from labelflow.triggers import PrefectRuns

    client = FakePrefectClient()
    runs = PrefectRuns(client)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    run_id = runs.submit(route("reviews"), when, "seaweedfs", keys=["s3://raw/a.txt"])
    assert client.created[0]["parameters"] == {"keys": ["s3://raw/a.txt"]}
    runs.set_keys(run_id, ["s3://raw/a.txt", "s3://raw/b.txt"])
    assert client.parameters[run_id] == {
        "spec_path": "/specs/reviews.yaml",
        "keys": ["s3://raw/a.txt", "s3://raw/b.txt"],
    }
    runs.set_keys(run_id, None)
    assert client.parameters[run_id] == {"spec_path": "/specs/reviews.yaml", "keys": None}
    runs.submit(route("reviews"), when, "label-studio")
    assert client.created[1]["parameters"] == {}
    assert "keys" in ingest.parameters.properties, "the flow takes the parameter the listener sets"


def test_routes_from_deployments() -> None:
    spec = parse_spec(
        {
            "name": "Reviews",
            "source": ["s3://raw/reviews/", "s3://raw2/"],
            "task": "text-classification",
            "labels": ["a", "b"],
        }
    )
    ingest_id, collect_id, pipeline_id = uuid4(), uuid4(), uuid4()
    deployments = [
        (ingest_id, "labelflow-ingest", spec.slug, {"spec_path": "/s.yaml"}),
        (collect_id, "labelflow-collect", spec.slug, {"spec_path": "/s.yaml"}),
        (pipeline_id, "labelflow-pipeline", spec.slug, {"spec_path": "/s.yaml"}),
        (uuid4(), "labelflow-ingest", "broken", {"spec_path": "/missing.yaml"}),
    ]

    def load(path: str):
        if path == "/missing.yaml":
            raise FileNotFoundError(path)
        return spec

    routes = build_routes(deployments, load, lambda s: 42)
    assert [r.deployment_id for r in routes.for_object(ObjectEvent("raw", "reviews/1.txt"))] == [ingest_id]
    assert [r.deployment_id for r in routes.for_object(ObjectEvent("raw2", "x/1.txt"))] == [ingest_id]
    assert routes.for_object(ObjectEvent("raw", "other/1.txt")) == []
    assert routes.for_project(42).deployment_id == collect_id
    assert routes.for_project(41) is None


def test_parse_every() -> None:
    assert parse_every("10m") == timedelta(minutes=10)
    assert parse_every("30s") == timedelta(seconds=30)
    assert parse_every("2h") == timedelta(hours=2)
    assert parse_every("off") is None
    for bad in ("10", "5 minutes", "0m", "-1h"):
        with pytest.raises(DeployError):
            parse_every(bad)


def test_prefect_yaml_declares_every_stage() -> None:
    templates = read_templates(ROOT / "prefect.yaml")
    assert set(STAGES) <= set(templates)
    for stage in STAGES:
        module, func = templates[stage].entrypoint.split(":")
        assert (ROOT / module).is_file()
        assert f"def {func}(" in (ROOT / module).read_text()
        assert templates[stage].work_pool == "labelflow"


def test_label_studio_may_reach_only_127_0_0_1() -> None:
    banned = [ipaddress.ip_network(n) for n in banned_subnets_except_loopback_host()]

    def blocked(ip: str) -> bool:
        return any(ipaddress.ip_address(ip) in net for net in banned)

    assert not blocked("127.0.0.1")
    for ip in ("127.0.0.2", "127.255.255.255", "10.0.0.1", "169.254.169.254", "192.168.1.1", "::1"):
        assert blocked(ip), ip
