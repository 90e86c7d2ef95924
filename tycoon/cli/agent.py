"""``tycoon agent run`` and ``tycoon broker serve|enroll|status``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.agent.bag import TaskRunner
from tycoon.agent.broker import enroll
from tycoon.agent.journal import choose_job, finished_job, mark_finished
from tycoon.agent.launch import launch as launch_broker
from tycoon.agent.parts import AgentParts
from tycoon.agent.tasks import Bag, TaskFileError, check_command, parse_tasks
from tycoon.auctioneer.bidparse import parse_duration
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.keys import default_home, is_public_key, subject_id
from tycoon.bus.runner import run_until_signal
from tycoon.cli.bank import resolve_account, resolve_bank_key
from tycoon.cli.common import bus_for, identity, print_json
from tycoon.cli.progress import start_progress
from tycoon.cli.serving import serve_until_signal
from tycoon.errors import Rejected
from tycoon.messages.agent import BrokerStatus, BrokerStatusReply
from tycoon.metrics.server import add_arguments as add_metrics_arguments
from tycoon.metrics.server import serve_from_args, stop_server
from tycoon.money import format_amount, parse_amount
from tycoon.resources import RESOURCES
from tycoon.supervisor import add_ready_argument


def register(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser("agent", help="bid automatically for a job")
    ops = agent.add_subparsers(dest="agent_command", metavar="OP", required=True)
    run = ops.add_parser("run", help="spend a budget before a deadline, rebidding continuously")
    run.add_argument("--budget", required=True, help="credits to spend, e.g. 100")
    run.add_argument("--deadline", required=True, help="duration, e.g. 30m, 2h, 1d")
    run.add_argument("--hosts", type=int, default=None, help="at most this many hosts")
    run.add_argument("--resource", choices=RESOURCES, default="cpu")
    run.add_argument("--candidates", type=int, default=100, help="hosts to consider")
    run.add_argument("--threshold", type=float, default=0.05, help="hysteresis (fraction)")
    run.add_argument("--probability", type=float, default=None,
                     help="plan so shares hold with this probability (price quantiles)")
    run.add_argument("--model", default="normal",
                     choices=("normal", "maxent", "chebyshev", "histogram"),
                     help="price model for --probability")
    run.add_argument("--replan", type=float, default=30.0, help="periodic replan, seconds")
    run.add_argument("--grace", default="3m",
                     help="after the deadline, keep bringing money home this long (e.g. 3m)")
    run.add_argument("--job", default=None,
                     help="job name (default: a fresh one per run); the name of an "
                          "interrupted job resumes it, a finished job's is refused")
    run.add_argument("--state", default=None,
                     help="journal directory (default <home>/agents), one journal per job")
    run.add_argument("--bank", default=None, help="the bank's public key or key name")
    run.add_argument("--json", action="store_true")
    work = run.add_mutually_exclusive_group()
    work.add_argument("--tasks", default=None, metavar="FILE",
                      help="run the command after -- once per line of FILE ({} is the line) "
                           "on the hosts held (docs/jobs.md)")
    work.add_argument("--each-host", action="store_true",
                      help="run the command after -- once on each host held ({}: its id)")
    run.add_argument("--out", default=None, metavar="DIR",
                     help="task outputs: DIR/<task>/{stdout,stderr,exit.json} "
                          "(default ./<job>.out)")
    run.add_argument("--bundle", default=None, metavar="DIR",
                     help="push DIR (or a file) once; every task starts with it unpacked in "
                          "its working directory")
    run.add_argument("--collect", action="append", default=[], metavar="PATH",
                     help="a path each task leaves in its working directory, fetched into "
                          "DIR/<task>/result (repeatable)")
    run.add_argument("command", nargs="*", help="with --tasks or --each-host: -- CMD {}")
    add_metrics_arguments(run)
    run.set_defaults(func=cmd_run)

    broker = sub.add_parser("broker", help="run or use a broker that bids for paying users")
    bops = broker.add_subparsers(dest="broker_command", metavar="OP", required=True)
    serve = bops.add_parser("serve", help="run a broker (as --as KEY)")
    serve.add_argument("--fee-percent", type=int, default=5)
    serve.add_argument("--state", default=None, help="directory (default <home>/broker)")
    serve.add_argument("--bank", default=None, help="the bank's public key or key name")
    add_ready_argument(serve)
    serve.set_defaults(func=cmd_serve)
    join = bops.add_parser("enroll", help="pay a broker budget + fee and start a job")
    join.add_argument("broker", help="the broker's public key or key name")
    join.add_argument("amount", help="credits paid: the budget plus the broker's fee")
    join.add_argument("deadline", help="duration, e.g. 2h")
    join.add_argument("--resource", choices=RESOURCES, default="cpu")
    join.add_argument("--bank", default=None, help="the bank's public key or key name")
    join.set_defaults(func=cmd_enroll)
    status = bops.add_parser("status", help="your jobs at a broker")
    status.add_argument("broker", help="the broker's public key or key name")
    status.set_defaults(func=cmd_status)


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home) if args.home else default_home()


async def cmd_run(args: argparse.Namespace) -> int:
    config = AgentConfig(
        budget=parse_amount(args.budget), deadline_s=parse_duration(args.deadline) / 1e9,
        resource=args.resource, max_hosts=args.hosts, candidates=args.candidates,
        threshold=args.threshold, replan_every_s=args.replan,
        probability=args.probability, model=args.model,
        grace_s=parse_duration(args.grace) / 1e9,
    )
    state = Path(args.state) if args.state else _home(args) / "agents"
    me = subject_id(identity(args).public_key)
    try:
        choice = choose_job(state, me, args.job, time.time())
    except ValueError as exc:
        raise Rejected("malformed", str(exc)) from exc
    job, path = choice.job, choice.path
    finished = finished_job(path)
    if finished is not None:  # reported as such: never reattached to with a new budget
        print(f"agent {me} job {job!r} is finished: spent "
              f"{format_amount(int(finished.get('spent', 0)))} credits in "
              f"{finished.get('plans', 0)} plans, nothing left to settle; start another "
              "with --job NAME, or leave --job out for a fresh one", flush=True)
        if args.json:
            print_json({**finished, "finished": True})
        return 0
    bag = read_bag(args)
    out = Path(args.out) if args.out else Path(f"{job}.out")
    bus = await bus_for(args)
    agent = make_agent(bus, resolve_bank_key(args), config, path, choice.prefix)
    if bag is not None:
        bundle = await push_bundle(bus, args.bundle)
        agent.tasks = TaskRunner(bus, agent.journal, bag, list(args.command), out,
                                 bundle=bundle, collect=list(args.collect))
        agent.core.bag = bag
        kept = agent.tasks.resume()
        print(f"{len(bag.tasks) if not bag.each_host else 'each host:'} tasks, outputs in "
              f"{out}/<task>/" + (f"; {kept} done before" if kept else ""), flush=True)
    what = "resuming unfinished job" if choice.resumed else "job"
    print(f"agent {agent.id} {what} {job}: {format_amount(config.budget)} credits of "
          f"{config.resource} before {args.deadline}; events on "
          f"{subjects.agent_all(agent.id)}", flush=True)
    metrics = await serve_from_args(args, agent)
    stop_progress = start_progress(agent, config.budget, sys.stdout.isatty() and not args.json,
                                   plain=not args.json)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run())
    waiter = asyncio.create_task(run_until_signal(stop_event=stop))
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:  # interrupted: the journal keeps the job; a rerun resumes it
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stop_progress()
        await stop_server(metrics)
        await bus.close()
        print(f"interrupted; run it again with --job {job} to resume this job")
        return 130
    stop.set()
    await waiter
    summary = task.result()
    await stop_progress()
    await stop_server(metrics)
    await bus.close()
    result = {"agent": summary.agent, "plans": summary.plans, "rebids": summary.rebids,
              "funded": summary.funded, "spent": summary.spent, "refunded": summary.refunded,
              "outstanding": summary.outstanding, "warnings": summary.warnings[-5:]}
    result["job"] = job
    if bag is not None:
        result["tasks"], result["out"] = summary.tasks, str(out)
    if not summary.outstanding:  # over: the name is not silently reattached later
        mark_finished(path, result)
    if args.json:
        print_json(result)
    else:
        print(f"done: spent {format_amount(summary.spent)} credits in {summary.plans} plans,"
              f" refunded {format_amount(summary.refunded)}")
        for item in summary.outstanding:
            print(f"  outstanding: {format_amount(item['amount'])} credits, {item['what']} at "
                  f"host {item['host']} {item['detail']}".rstrip())
        if summary.tasks is not None:
            t = summary.tasks
            print(f"tasks: {t['done']} done ({t['failed']} failed), {t['running']} running, "
                  f"{t['queued']} queued; outputs in {out}")
    # money still away at the end of the grace period: a rerun (it only settles) or an
    # operator must see to it
    if summary.outstanding:
        return 3
    return task_status(summary.tasks)


def task_status(tasks: dict[str, int] | None) -> int:
    """The exit status of a job: 4 when tasks are left undone, 1 when one failed."""
    if tasks is None:
        return 0
    if tasks["running"] or tasks["queued"]:
        return 4
    return 1 if tasks["failed"] else 0


async def push_bundle(bus: Bus, path: str | None) -> str | None:
    """``--bundle``: pushed once (its digest, printed); a bundle pushed before costs nothing."""
    if path is None:
        return None
    from tycoon.bundles.client import push

    digest = await push(bus, path)
    print(f"bundle {path}: {digest}", flush=True)
    return digest


def read_bag(args: argparse.Namespace) -> Bag | None:
    """The job's bag of tasks (None: no --tasks, no --each-host); refused before anything
    runs when the file or command cannot make one."""
    if args.tasks is None and not args.each_host:
        if args.command or args.bundle or args.collect:
            raise Rejected("malformed", "a command after --, --bundle and --collect need "
                           "--tasks FILE or --each-host")
        return None
    try:
        if args.each_host:
            check_command(list(args.command), ["x" * 16])
            return Bag(each_host=True)
        data = sys.stdin.buffer.read() if args.tasks == "-" else Path(args.tasks).read_bytes()
        tasks = parse_tasks(data)
        check_command(list(args.command), (arg for _, arg in tasks))
    except OSError as exc:
        raise Rejected("malformed", f"cannot read the task file: {exc.strerror}") from exc
    except TaskFileError as exc:
        raise Rejected("malformed", str(exc)) from exc
    if not tasks:
        raise Rejected("malformed", f"no task in {args.tasks} (one argument per line)")
    return Bag.of(tasks)


def make_agent(bus: Bus, bank_key: str, config: AgentConfig, journal: Path,
               prefix: str) -> Agent:
    """The agent of one job: its journal, and transfer ids ``<prefix>.<epoch>...`` with
    ``prefix`` = ``<agent id>.<job>`` (two jobs of one key never share an id, so the bank
    never answers 'conflict')."""
    parts = AgentParts.default(bus, bank_key, config, journal)
    parts.allocator.agent_id = prefix  # move ids: f"{agent_id}.{epoch}.{host}.{step}"
    return Agent.from_parts(bus, config, parts)


async def cmd_serve(args: argparse.Namespace) -> int:
    state = Path(args.state) if args.state else _home(args) / "broker"
    bus = await bus_for(args)
    try:
        async with launch_broker(bus, bank_key=resolve_bank_key(args), state=state,
                                 fee_percent=args.fee_percent) as running:
            broker = running.broker
            await serve_until_signal(
                args, f"broker {broker.id} serving on {subjects.broker(broker.id, 'enroll')}")
    finally:
        await bus.close()
    return 0


def _broker_key(args: argparse.Namespace) -> str:
    return args.broker if is_public_key(args.broker) else resolve_account(args, args.broker)


async def cmd_enroll(args: argparse.Namespace) -> int:
    bus = await bus_for(args)
    try:
        reply = await enroll(bus, resolve_bank_key(args), _broker_key(args),
                             parse_amount(args.amount), args.deadline, resource=args.resource)
    finally:
        await bus.close()
    print_json(reply)
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    bus = await bus_for(args)
    try:
        reply = await bus.request(subjects.broker(subject_id(_broker_key(args)), "status"),
                                  "broker.status", BrokerStatus().to_body())
    finally:
        await bus.close()
    BrokerStatusReply.from_body(reply.body)
    print_json(reply.body)
    return 0
