"""``soniq workflows``: list workflows, and show one as a tree of its steps."""

from __future__ import annotations

from typing import Any

import click

from soniq.app import Soniq
from soniq.cli.apps import with_app
from soniq.cli.base import SoniqGroup, cli, common, fail, json_option
from soniq.cli.render import ago, console, emit_json, stamp, table
from soniq.workflows import WORKFLOW_STATUSES

STATUS_STYLE = {
    "done": "green", "running": "cyan", "processing": "cyan", "queued": "blue",
    "waiting": "dim", "failed": "red", "dead_letter": "red", "cancelled": "yellow",
}  # fmt: skip


@cli.group("workflows", cls=SoniqGroup)
def workflows() -> None:
    """List workflows and show one with each step's status."""


@workflows.command("list")
@common
@json_option
@click.option("--status", type=click.Choice(WORKFLOW_STATUSES), help="Only workflows in S.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def workflows_list(as_json: bool, status: str | None, limit: int) -> None:
    """Workflows, newest first, with their steps' counts."""

    async def go(app: Soniq) -> None:
        rows = await app.list_workflows(status=status, limit=limit)
        if as_json:
            emit_json(rows)
            return
        body = [
            [
                w["id"],
                w["name"],
                w["status"],
                w["steps"],
                ", ".join(f"{k} {v}" for k, v in sorted(w["counts"].items())),
                ago(w["created_at"]),
            ]
            for w in rows
        ]
        console().print(
            table("Workflows", ["ID", "Name", "Status", "Steps", "Step statuses", "Created"], body)
        )

    with_app(go)


def dag_tree(wf: dict[str, Any]) -> Any:
    """A rich Tree: each step under its first parent in the workflow (other parents named)."""
    from rich.text import Text
    from rich.tree import Tree

    head = Text(f"{wf['name'] or 'workflow'} {wf['id']} ", style="bold")
    head.append(wf["status"], style=STATUS_STYLE.get(wf["status"], ""))
    tree = Tree(head)
    by_id = {s["id"]: s for s in wf["steps"]}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in wf["steps"]:
        inside = [p for p in s["after"] if p in by_id]
        if inside:
            first = min(inside, key=lambda p: p)  # ids are time-ordered: the first added
            children.setdefault(first, []).append(s)
        else:
            roots.append(s)

    def label(s: dict[str, Any], under: str | None) -> Text:
        status = str(s["status"])
        t = Text(f"{s['step']} ")
        t.append(status, style=STATUS_STYLE.get(status, ""))
        t.append(f"  {s['job_name']}  {s['id']}", style="dim")
        others = [by_id[p]["step"] if p in by_id else f"job {p}" for p in s["after"] if p != under]
        if others:
            t.append(f"  (also after {', '.join(others)})", style="dim")
        if s.get("cancel_reason"):
            t.append(f"  [{s['cancel_reason']}]", style="yellow")
        return t

    def grow(node: Any, s: dict[str, Any], under: str | None) -> None:
        branch = node.add(label(s, under))
        for c in children.get(s["id"], []):
            grow(branch, c, s["id"])

    for r in roots:
        grow(tree, r, None)
    return tree


@workflows.command("show")
@common
@json_option
@click.argument("workflow_id", metavar="ID")
def workflows_show(as_json: bool, workflow_id: str) -> None:
    """The workflow ID: its status and its steps as a tree (each under its parent)."""

    async def go(app: Soniq) -> None:
        wf = await app.get_workflow(workflow_id)
        if wf is None:
            fail(f"no workflow with id {workflow_id}", code=1)
        if as_json:
            emit_json(wf)
            return
        out = console()
        out.print(dag_tree(wf))
        out.print(f"created {stamp(wf['created_at'])}, finished {stamp(wf['finished_at'])}")

    with_app(go)
