"""A migration's estimate from measurements, the rule that ends pre-copy, and what apply does
with them: a service writing faster than the link carries is refused before the fence; a
migration that converges reports its estimate beside what it measured, and leaves its costs
for the next estimate."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from ployz.agent.api import ReceiveState
from ployz.control import ControlPlane
from ployz.control.models import CutoverCosts, LinkRate
from ployz.deploy.apply import deploy
from ployz.deploy.events import Event
from ployz.deploy.manifest import parse_manifest
from ployz.deploy.migration.apply import migrate
from ployz.deploy.migration.errors import MigrationAborted
from ployz.deploy.migration.estimate import (
    DEFAULT_BUDGET_SLACK_S,
    default_budget,
    next_round,
    predict,
)
from ployz.deploy.migration.link_probe import ProbeFailed, probe_between
from ployz.deploy.migration.plan import plan_migration
from tests.unit.deploy.fake_agents import FakeCluster
from tests.unit.deploy.test_deploy_run import manifest, recorded
from tests.unit.migration.conftest import MACHINES, WEB
from tests.unit.migration.test_migration_run import on_source

MIB = 1 << 20
LINK = LinkRate(source="machine-a", target="machine-b", bytes_per_s=10 * MIB, fixed_s=1.0,
                sends=3)
COSTS = CutoverCosts(namespace="shop", service="web", stop_s=1.0, start_s=0.5, ready_s=0.5,
                     overhead_s=20.0)
FIELDS = {"initial_bytes", "final_bytes", "seconds", "window_seconds", "link_bytes_per_s",
          "write_bytes_per_s"}


def test_a_converging_service_is_estimated_round_by_round() -> None:
    prediction = predict(100 * MIB, 1 * MIB, LINK, COSTS, budget_s=3.5)
    e = prediction.estimate
    assert set(e.to_json()) == FIELDS
    # The full send takes 11 s, while 11 MiB are written: their send, with the stop's 1 MiB,
    # would make a window of 1 + 2.2 + 1 s, over the budget. One round of 11 MiB (2.1 s) leaves
    # 2.1 MiB: a window of 1 + (1 + 0.31) + 1 s.
    assert prediction.rounds == 3 and prediction.converges is True
    assert e.final_bytes == round(3.1 * MIB)
    assert e.window_seconds == pytest.approx(3.31)
    assert e.seconds == pytest.approx(11 + 2.1 + 3.31 + 20)
    assert (e.link_bytes_per_s, e.write_bytes_per_s) == (10 * MIB, 1 * MIB)


def test_the_budget_caps_the_downtime_it_is_not_a_target_to_fill() -> None:
    """The 11 MiB written during the full send would fit a budget of 5 s or of a minute, but a
    round more, while the service still runs, takes 0.9 s off the window: the window is the
    same whatever the budget. The round after (2.1 MiB, leaving 1.2) is not worth it."""
    for budget in (5.0, 60.0):
        prediction = predict(100 * MIB, 1 * MIB, LINK, COSTS, budget_s=budget)
        assert prediction.rounds == 3 and prediction.converges is True
        assert prediction.estimate.window_seconds == pytest.approx(3.31)
    assert next_round(LINK, COSTS, 1 * MIB, 11 * MIB, None, 1, 60.0) == "another round"
    assert next_round(LINK, COSTS, 1 * MIB, 2.1 * MIB, 11 * MIB, 2, 60.0) == "fence"


def test_an_idle_service_fences_after_its_full_send() -> None:
    """Nothing written: each round would halve nothing; a few KiB are not worth a round."""
    assert next_round(LINK, COSTS, 0.0, 0.0, None, 1, 5.0) == "fence"
    assert next_round(LINK, COSTS, 1024.0, 64 * 1024, None, 1, 5.0) == "fence"
    assert predict(100 * MIB, 0.0, LINK, COSTS).rounds == 2


def test_rounds_worth_it_stop_at_the_bound() -> None:
    assert next_round(LINK, COSTS, 1 * MIB, 11 * MIB, 12 * MIB, 9, 60.0) == "fence"


def test_a_service_writing_faster_than_the_link_does_not_converge() -> None:
    prediction = predict(100 * MIB, 20 * MIB, LINK, COSTS, budget_s=5.0)
    assert prediction.converges is False
    assert next_round(LINK, COSTS, 20 * MIB, 200 * MIB, 100 * MIB, 2, 5.0) == "cannot converge"
    assert next_round(LINK, COSTS, 1 * MIB, 50 * MIB, 100 * MIB, 2, 5.0) == "another round"
    assert next_round(LINK, COSTS, 1 * MIB, 1 * MIB, 50 * MIB, 3, 5.0) == "fence"


def test_what_is_not_measured_yet_is_unknown_never_guessed() -> None:
    unknown = predict(100 * MIB, 1 * MIB, None, None).estimate
    assert (unknown.seconds, unknown.window_seconds, unknown.final_bytes) == (None, None, None)
    assert unknown.initial_bytes == 100 * MIB
    # no migration measured a stop and a start yet: the final send alone is no window
    no_costs = predict(100 * MIB, 1 * MIB, LINK, None).estimate
    assert (no_costs.window_seconds, no_costs.seconds) == (None, None)
    assert no_costs.final_bytes is not None
    assert default_budget(None) == DEFAULT_BUDGET_SLACK_S
    assert default_budget(COSTS) == 2.0 + DEFAULT_BUDGET_SLACK_S


def test_the_default_budget_leaves_room_for_the_links_set_up() -> None:
    """A link whose fixed cost per send is longer than the slack (a drain's sends share a busy
    machine): an empty final send must still fit the default budget, or pre-copy would never
    fence and the migration would refuse to converge."""
    slow_set_up = LinkRate(source="machine-a", target="machine-b", bytes_per_s=5e6,
                           fixed_s=DEFAULT_BUDGET_SLACK_S + 2.0, sends=4)
    budget = default_budget(COSTS, slow_set_up)
    assert budget == 2.0 + slow_set_up.fixed_s + DEFAULT_BUDGET_SLACK_S
    assert next_round(slow_set_up, COSTS, 0.0, 0.0, None, 1, budget) == "fence"


def test_the_default_budget_follows_the_figures_each_round_is_judged_by(
        cp: ControlPlane, agents: FakeCluster) -> None:
    """A parallel drain: while this service's full send runs, another service's migration
    ends and records longer stop and start costs, the ones this run's verdicts then read. A
    default budget fixed at plan time (before any cost was measured) could not hold the
    measured stop and start around even an empty final send, and pre-copy refused to converge;
    the default is taken from the same figures as the window it bounds."""
    cp.record_send("machine-a", "machine-b", 100 * MIB, 10.0)
    slower = CutoverCosts(namespace="shop", service="other", stop_s=4.0, start_s=3.0,
                          ready_s=1.0, overhead_s=20.0)
    agents.during_send = lambda: cp.record_cutover(slower)
    events: list[dict[str, Any]] = []
    result = migrate(cp, agents, WEB, "machine-b", emit=recorded(events))
    plan_budget = next(e["plan"] for e in events if "plan" in e)["estimate"]["max_downtime_s"]
    assert plan_budget < slower.stop_s + slower.start_s + slower.ready_s
    assert cp.get_service("shop", "web").machine == "machine-b"
    assert result.target == "machine-b"
    # The operator's own budget is kept as given: the same figures make it refuse.
    agents.during_send = None
    cp.record_send("machine-b", "machine-a", 100 * MIB, 10.0)
    cp.record_cutover(CutoverCosts(**{**slower.model_dump(), "service": "web"}))
    with pytest.raises(MigrationAborted, match="cannot converge to a downtime of 2 s"):
        migrate(cp, agents, WEB, "machine-a", max_downtime_s=2.0)
    assert cp.get_service("shop", "web").machine == "machine-b"








def test_a_writer_faster_than_the_link_is_refused_before_the_fence(
        cp: ControlPlane, agents: FakeCluster) -> None:
    cp.record_send("machine-a", "machine-b", 100 * MIB, 10.0)  # a link of about 10 MiB/s
    source = agents.machines["machine-a"].datasets["machine-a/shop.db"]
    source.writes_between_snapshots = 200 * MIB  # what is written during each round
    events: list[dict[str, Any]] = []
    with pytest.raises(MigrationAborted) as aborted:
        migrate(cp, agents, WEB, "machine-b", max_downtime_s=1.0, emit=recorded(events))
    message = str(aborted.value)
    assert "pre-copy cannot converge to a downtime of 1 s" in message
    assert "the service writes" in message and "the link carries" in message
    assert [e["phase"] for e in events if e["event"] == "phase"] == ["lock", "pre-copy"]
    on_source(cp, agents)


def test_the_done_event_carries_the_estimate_and_what_was_measured(
        cp: ControlPlane, agents: FakeCluster) -> None:
    events: list[dict[str, Any]] = []
    result = migrate(cp, agents, WEB, "machine-b", emit=recorded(events))
    done = events[-1]
    assert done["event"] == "done"
    assert set(done["estimate"]) == FIELDS and set(done["actual"]) == FIELDS
    assert done["actual"]["seconds"] == result.seconds
    assert done["actual"]["window_seconds"] == result.cutover["total"]
    assert done["actual"]["initial_bytes"] == 4096  # what the fake sends
    record = cp.get_deploy(result.deploy_id).detail
    assert (record["estimate"], record["actual"]) == (done["estimate"], done["actual"])
    costs = cp.cutover_costs("shop", "web")
    assert costs is not None and costs.start_s == result.cutover["start"]
    assert cp.latest_cutover_costs() == costs
    link = cp.link_rate("machine-a", "machine-b")
    assert link is not None and link.sends == 2  # the full and the final send


FOUR_VOLUMES = parse_manifest(textwrap.dedent("""
    namespace = "shop"
    [[services]]
    name = "web"
    placement = "machine-a"
    [services.template]
    image = "img:1"
    mounts = { v1 = "/v1", v2 = "/v2", v3 = "/v3", v4 = "/v4" }
""") + "".join(f'[[volumes]]\nname = "v{i}"\nowner = "machine-a"\n' for i in range(1, 5)),
    "deploy.toml")


def cluster_with_image() -> FakeCluster:
    """Every machine has the service's image, as a migration needs on its target."""
    cluster = FakeCluster(MACHINES)
    for machine in cluster.machines.values():
        machine.images.add("img:1")
    return cluster


def test_every_volume_moves_in_each_round_at_once_sharing_the_bandwidth_limit(
        cp: ControlPlane) -> None:
    cluster = cluster_with_image()
    deploy(cp, FOUR_VOLUMES, cluster, holder="ops")
    events: list[dict[str, Any]] = []
    result = migrate(cp, cluster, WEB, "machine-b", bwlimit=40e6, emit=recorded(events))
    sends = sorted((e["kind"], e["volume"]) for e in events
                   if e["event"] == "transfer" and e["state"] == "done")
    assert sends == sorted((kind, f"v{i}") for kind in ("full", "final") for i in range(1, 5))
    state = cp.namespace("shop")
    assert {v.owner for v in state.volumes.values()} == {"machine-b"}
    assert set(state.transfers) == {"v1", "v2", "v3", "v4"}
    # each send of the two rounds under the whole limit, all in the run's one group
    limits = cluster.machines["machine-a"].bwlimits
    assert len(limits) == 8 and {limit for limit, _group in limits} == {40e6}
    assert {group for _limit, group in limits} == {result.deploy_id}
    link = cp.link_rate("machine-a", "machine-b")
    assert link is not None and link.sends == 2  # each round measured once, all its volumes


@pytest.mark.parametrize("volumes", [1, 4])
def test_the_window_writes_to_the_control_plane_the_same_whatever_the_volumes(
        cp: ControlPlane, volumes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the fence to the start, the record is written with each step only: a write per
    send (its transfer id, its snapshot sent) is a control-plane write in a row inside the
    window, four with four volumes."""
    cluster = cluster_with_image()
    deploy(cp, FOUR_VOLUMES if volumes == 4 else manifest("1"), cluster, holder="ops")
    phase = [""]
    writes: dict[str, int] = {}

    def counted(write: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            writes[phase[0]] = writes.get(phase[0], 0) + 1
            return write(*args, **kwargs)
        return call

    monkeypatch.setattr(cp, "update_deploy", counted(cp.update_deploy))
    monkeypatch.setattr(cp, "record_send", counted(cp.record_send))

    def emit(event: Event) -> None:
        data = event.to_json()
        if data["event"] == "phase":
            phase[0] = data["phase"]

    migrate(cp, cluster, WEB, "machine-b", emit=emit)
    # the fence's step saves what it stops and snapshots; then only the steps of the final
    # send and of the start (each saved before its event is told)
    assert (writes.get("fence"), writes.get("final-send")) == (1, 1)
    assert cp.link_rate("machine-a", "machine-b").sends == 2  # type: ignore[union-attr]


def test_a_service_without_volumes_moves_with_nothing_to_send(cp: ControlPlane) -> None:
    cluster = cluster_with_image()
    stateless = parse_manifest(textwrap.dedent("""
        namespace = "shop"
        [[services]]
        name = "web"
        placement = "machine-a"
        [services.template]
        image = "img:1"
    """), "deploy.toml")
    deploy(cp, stateless, cluster, holder="ops")
    events: list[dict[str, Any]] = []
    result = migrate(cp, cluster, WEB, "machine-b", emit=recorded(events))
    assert result.target == "machine-b"
    assert [e for e in events if e["event"] == "transfer"] == []
    assert cp.namespace("shop").services["web"].machine == "machine-b"


def test_the_estimate_takes_the_link_as_probed_now_scaled_by_its_history(
        cp: ControlPlane, agents: FakeCluster) -> None:
    """Sends carried half of what their probes measured; the probe now says 50 MB/s: the
    estimate's link is 25 MB/s, whatever rate the history's sends had."""
    cp.record_send("machine-a", "machine-b", 100 * MIB, 10.0, probe_bytes_per_s=20 * MIB)
    ratio = cp.link_rate("machine-a", "machine-b").probe_ratio  # type: ignore[union-attr]
    agents.write_sample_s = 0.01
    events: list[dict[str, Any]] = []
    migrate(cp, agents, WEB, "machine-b", emit=recorded(events))
    estimate = events[-1]["estimate"]
    assert estimate["link_bytes_per_s"] == pytest.approx(50e6 * ratio)
    assert [c for c in agents.calls if "probe" in c] == [
        "machine-b transfer.probe_receive", "machine-a transfer.probe_send"]


def test_a_first_migrations_plan_says_the_probe_alone_and_no_window(
        cp: ControlPlane, agents: FakeCluster) -> None:
    """No send and no cutover measured yet: the link is the probe's, said as such, and the
    window and the whole time are unknown rather than the final send alone."""
    agents.write_sample_s = 0.01
    plan = plan_migration(cp, agents, WEB, "machine-b")
    estimate, basis = plan.prediction.estimate, plan.prediction.basis
    assert basis["link"].endswith("; no send measured yet"), basis
    assert basis["cutover_costs"] == "not measured yet"
    assert estimate.link_bytes_per_s == plan.prediction.probe_bytes_per_s
    assert (estimate.window_seconds, estimate.seconds) == (None, None)


def test_a_plan_whose_probe_fails_estimates_from_the_history(
        cp: ControlPlane, agents: FakeCluster) -> None:
    cp.record_send("machine-a", "machine-b", 100 * MIB, 10.0, probe_bytes_per_s=20 * MIB)
    history = cp.link_rate("machine-a", "machine-b")
    agents.write_sample_s = 0.01
    agents.fail_on("machine-a", "transfer.probe_send")
    events: list[dict[str, Any]] = []
    migrate(cp, agents, WEB, "machine-b", emit=recorded(events))
    assert events[-1]["estimate"]["link_bytes_per_s"] == history.bytes_per_s  # type: ignore[union-attr]
    # the probe's receiver was let go of, and the migration moved the service
    assert "machine-b transfer.receive_cancel" in agents.calls
    assert cp.namespace("shop").routes["web"].machine == "machine-b"


def test_under_a_bandwidth_limit_the_link_is_taken_at_most_at_the_limit(
        cp: ControlPlane, agents: FakeCluster) -> None:
    cp.record_send("machine-a", "machine-b", 100 * MIB, 10.0)  # about 10 MiB/s
    agents.write_sample_s = 0.01
    events: list[dict[str, Any]] = []
    migrate(cp, agents, WEB, "machine-b", bwlimit=2e6, emit=recorded(events))
    assert events[-1]["estimate"]["link_bytes_per_s"] == 2e6
    # nor is the link probed at its full rate, over the limit the operator set
    assert not [call for call in agents.calls if "probe" in call]


def test_a_probe_whose_receiver_does_not_end_fails_and_lets_the_receiver_go(
        agents: FakeCluster) -> None:
    source, target = agents.agent_of("machine-a"), agents.agent_of("machine-b")
    target.transfer.receive_wait = (  # type: ignore[method-assign]
        lambda transfer_id, timeout_s=30.0: ReceiveState(state="running"))
    with pytest.raises(ProbeFailed, match="receiver running"):
        probe_between(source, target, agents.key, 1.0)
    assert agents.calls[-1] == "machine-b transfer.receive_cancel"
