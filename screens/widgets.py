"""The parts several screens share, each with its own look: the tab bar, the view bar,
the title bar, the node's bar, a field row (and its one-line form), the button bar, the invitation
code's box, "Enter presses the focused button", and tables' column widths.

A screen's own .tcss only adjusts these (a narrower label, a red title bar).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar, Protocol, TypeVar

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Label, Select, TextArea

from exalate_tui.domain.live import NodeNeed, ago
from exalate_tui.transport.background import Status


def content_widths(labels: Sequence[str], rows: Iterable[Sequence[Text]]) -> list[int]:
    """Each column's width: its widest line, label included.

    Given to the table's columns rather than left to DataTable's auto width, which is
    measured once the table is next idle: rows drawn before then keep their narrower
    cells until something else changes (a longer status wrapped onto a hidden line).
    """
    widths = [cell_len(label) for label in labels]
    for cells in rows:
        for index, cell in enumerate(cells):
            widths[index] = max(widths[index], *(cell_len(line) for line in cell.plain.split("\n")))
    return widths


def set_rows(
    table: DataTable[Text],
    rows: Sequence[tuple[str, Sequence[Text]]],
    widths: Sequence[int] | None = None,
    *,
    height: int = 1,
) -> None:
    """Replace the table's rows, keeping the cursor's place; each column set to its width
    in `widths`, by default as wide as its content (`content_widths`)."""
    columns = table.ordered_columns
    if widths is None:
        widths = content_widths([column.label.plain for column in columns], (r[1] for r in rows))
    place = table.cursor_row
    if all(not c.auto_width and c.width == w for c, w in zip(columns, widths, strict=True)):
        table.clear()
    else:
        table.clear(columns=True)
        for column, width in zip(columns, widths, strict=True):
            table.add_column(column.label, key=column.key.value, width=width)
    for key, cells in rows:
        table.add_row(*cells, height=height, key=key)
    if rows:
        table.move_cursor(row=min(place, len(rows) - 1))


# The console's tabs: (id, title, the key that shows it).
TABS = (("connections", "Connections", "c"), ("tickets", "Tickets", "t"))


class TabBar(Horizontal):
    """The tabs across the top, the one shown highlighted, each other one with its key;
    this instance on the right (`#instance`, filled in by the screen)."""

    DEFAULT_CSS = """
    TabBar {
        dock: top;
        height: 1;
        background: $panel;
    }
    TabBar .tab {
        padding: 0 1;
        color: $text-muted;
    }
    TabBar .tab.-active {
        background: $primary;
        color: $text;
        text-style: bold;
    }
    TabBar #instance {
        width: 1fr;
        text-align: right;
        padding-right: 1;
        color: $text-muted;
    }
    """

    def __init__(self, active: str) -> None:
        super().__init__(id="tabs")
        self.active = active

    def compose(self) -> ComposeResult:
        for tab, title, key in TABS:
            if tab == self.active:
                yield Label(Text(title), id=f"tab-{tab}", classes="tab -active")
            else:
                yield Label(
                    Text.assemble((key, "bold"), f" {title}"), id=f"tab-{tab}", classes="tab"
                )
        yield Label(Text(""), id="instance")


class ViewBar(Horizontal):
    """A screen's views in a row, each with its key, the one shown highlighted
    (`show(view)`); each label's text can change (`retitle`, e.g. a count)."""

    DEFAULT_CSS = """
    ViewBar {
        height: 1;
        background: $panel;
    }
    ViewBar .view {
        padding: 0 1;
        color: $text-muted;
    }
    ViewBar .view.-active {
        background: $primary;
        color: $text;
        text-style: bold;
    }
    """

    def __init__(self, views: list[tuple[str, str, str]], active: str) -> None:
        """`views`: (id, title, key) in the order shown."""
        super().__init__(id="views")
        self.views = views
        self.active = active

    def compose(self) -> ComposeResult:
        for view, title, key in self.views:
            classes = "view -active" if view == self.active else "view"
            yield Label(self._text(key, title), id=f"view-{view}", classes=classes)

    @staticmethod
    def _text(key: str, title: str) -> Text:
        return Text.assemble((key, "bold"), f" {title}")

    def show(self, active: str) -> None:
        self.active = active
        for view, _, _ in self.views:
            self.query_one(f"#view-{view}", Label).set_class(view == active, "-active")

    def retitle(self, view: str, title: str) -> None:
        for shown, _, key in self.views:
            if shown == view:
                self.query_one(f"#view-{view}", Label).update(self._text(key, title))


class TitleBar(Label):
    """The bar across the top of a screen, saying what the screen is."""

    DEFAULT_CSS = """
    TitleBar {
        dock: top;
        width: 1fr;
        height: 1;
        padding: 0 1;
        background: $primary;
        color: $text;
        text-style: bold;
    }
    """


def node_line(status: Status | None, need: NodeNeed, now: float) -> tuple[str, str]:
    """What the node bar says, and its class: `-up`, `-stuck`, `-needed` or `-down`."""
    if status is not None and status.running:
        record = status.record
        where = f" on {record.host}:{record.port}" if record else ""
        if status.probed and not status.answers:
            return f"node: running{where} but not answering; see node.log", "-stuck"
        up = f" · up {ago(status.uptime(now) or 0).removesuffix(' ago')}" if record else ""
        return f"node: running{where}{up} · N stops it", "-up"
    # The key first: a long reason is cut at the right edge, the way to fix it never is.
    if need:
        return f"node: not running — press n to start it · {need.reason}", "-needed"
    return "node: not running — press n, or run `exalate-tui node start`", "-down"


class NodeBar(Label):
    """One line under a screen's title: whether this home's node runs, and what needs it.

    The App checks the node every few seconds in a worker and hands each bar the
    result (`show_status`); the screen hands it what depends on the node (`show_need`).
    """

    DEFAULT_CSS = """
    NodeBar {
        width: 1fr;
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $text-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    NodeBar.-up { color: $text-success; }
    NodeBar.-stuck { color: $text-warning; }
    NodeBar.-needed { color: $text-error; text-style: bold; }
    """

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__("", id="node-bar", markup=False)
        self.now = now
        self.status: Status | None = None
        self.need = NodeNeed()

    def on_mount(self) -> None:
        self.status = getattr(self.app, "node_status", None)
        self._draw()

    def show_status(self, status: Status | None) -> None:
        self.status = status
        self._draw()

    def show_need(self, need: NodeNeed) -> None:
        self.need = need
        self._draw()

    def _draw(self) -> None:
        text, style = node_line(self.status, self.need, self.now())
        self.set_classes(style)
        self.update(Text(text, no_wrap=True, overflow="ellipsis"))


class StepTitle(Horizontal):
    """The wizard's title bar: its name on the left, "Step N: name" on the right."""

    DEFAULT_CSS = """
    StepTitle {
        dock: top;
        height: 1;
        padding: 0 1;
        background: $primary;
        color: $text;
    }
    StepTitle #wizard-name {
        width: 1fr;
        text-style: bold;
    }
    StepTitle #wizard-count {
        width: auto;
    }
    """

    def __init__(self, title: str, count: str) -> None:
        super().__init__(id="wizard-title")
        self.title_text = title
        self.count_text = count

    def compose(self) -> ComposeResult:
        yield Label(self.title_text, id="wizard-name")
        yield Label(self.count_text, id="wizard-count")


class FieldRow(Horizontal):
    """A label on the left, the input on the right, its error (`#error-<input id>`) under it."""

    DEFAULT_CSS = """
    FieldRow {
        height: auto;
    }
    FieldRow .field-label {
        width: 28;
        padding: 1 1 0 0;
    }
    FieldRow .field-box {
        width: 1fr;
        height: auto;
    }
    """

    def __init__(self, label: str, field: Input, *, required: bool = False) -> None:
        super().__init__(classes="field")
        assert field.id is not None  # the error label is named after it
        self.label_text = f"{label}*" if required else label
        self.required = required
        self.field = field

    def compose(self) -> ComposeResult:
        yield Label(self.label_text, classes="field-label")
        with Vertical(classes="field-box"):
            yield self.field
            yield Label("", id=f"error-{self.field.id}", classes="field-error")


class ButtonBar(Horizontal):
    """A screen's buttons, in a row under its body."""

    DEFAULT_CSS = """
    ButtonBar {
        height: 1;
        margin: 0 2 1 2;
    }
    ButtonBar Button {
        margin-right: 2;
    }
    """


class CodeBox(TextArea):
    """An invitation code: selectable, wrapped, not editable."""

    DEFAULT_CSS = """
    CodeBox {
        height: auto;
        max-height: 10;
    }
    """

    def __init__(self, code: str) -> None:
        super().__init__(code, read_only=True, soft_wrap=True, id="code")


class SubmitScreen(Screen[None]):
    """A screen whose Enter (`action_submit`) presses the focused button, else runs
    `ENTER_ACTION`, the screen's way on."""

    ENTER_ACTION: ClassVar[str] = "next"

    async def action_submit(self) -> None:
        focused = self.focused
        if isinstance(focused, Button):
            focused.press()
        else:
            await self.run_action(self.ENTER_ACTION)


class Form(Protocol):
    """A flow's form, as a form screen drives it: its values by field name, and `set`."""

    @property
    def values(self) -> Mapping[str, str]: ...

    def set(self, name: str, value: str) -> object: ...


ResultT = TypeVar("ResultT")


class FormScreen(Screen[ResultT]):
    """A screen whose fields are `#field-<name>` widgets over a flow's `form`: what is
    typed or chosen goes to `form.set`, then `form_changed` redraws what it affects.
    Enter in a field and its `#save` button save (`action_save`); `#cancel` cancels."""

    form: Form

    def form_select(self, name: str, options: Iterable[tuple[str, str]]) -> Select[str]:
        """A compact Select for field `name`, showing its value; (label, value) options."""
        return Select(
            list(options),
            value=self.form.values[name],
            allow_blank=False,
            id=f"field-{name}",
            compact=True,
        )

    @staticmethod
    def field_of(widget: Widget) -> str:
        return (widget.id or "").removeprefix("field-")

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        self.set_field(self.field_of(event.input), event.value)

    @on(Select.Changed)
    def _chosen(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.set_field(self.field_of(event.select), event.value)

    def set_field(self, name: str, value: str) -> None:
        if name in self.form.values and self.form.values[name] != value:
            self.form.set(name, value)
            self.form_changed()

    def form_changed(self) -> None:
        """Show what the form now says (errors, the fields a choice reveals)."""

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_save(self) -> None:
        raise NotImplementedError

    def action_cancel(self) -> None:
        raise NotImplementedError
