"""The app's widgets: the status line, the prompt editor and the six view panes. Each takes
the current `Scope` as a reactive attribute and draws it with a function from its view."""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.terminal_theme import TerminalTheme
from rich.text import Span, Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer, Input

from gpt2scope.tui.contrast import is_cells, readable
from gpt2scope.tui.messages import PromptLeft
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import editable
from gpt2scope.tui.views import PaneSpec, render_header
from gpt2scope.tui.views.common import Drawn, count, longest_fitting
from gpt2scope.tui.views.style import CAPTION, NOTE


def joined_lines(lines: list[Text]) -> Text:
    text = Text("\n").join(lines)
    text.no_wrap = True
    text.overflow = "crop"
    return text


class StatusLine(Widget):
    """Model, layer and head, query token, sampling settings and the runner's state."""

    scope: reactive[Scope | None] = reactive(None)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._header: tuple[tuple, list[Text]] | None = None
        self._height = 0

    def header(self) -> list[Text]:
        """The lines for this scope and width, worked out once for the watcher and render."""
        key = (self.scope, self.content_size.width)
        if self._header is None or self._header[0] != key:
            lines = [] if self.scope is None else render_header(self.scope, key[1])
            self._header = (key, lines)
        return self._header[1]

    def watch_scope(self) -> None:
        # A new layout repaints the whole screen; only a change in the line count needs one.
        height = len(self.header())
        self.refresh(layout=height != self._height)
        self._height = height

    def render(self) -> RenderableType:
        base, console = self.visual_style.rich_style, self.app.console
        text = joined_lines(self.header())
        spans = [
            Span(span.start, span.end, readable_on(console.get_style(span.style), base, self))
            for span in text.spans
        ]
        return Text(text.plain, spans=spans, no_wrap=True, overflow="crop")


class LeanFooter(Footer):
    """Textual's Footer without its leak (textual#6666, still in 8.2): every focus change
    recomposes it, and each new key binds itself to the footer's `compact`, a watcher that
    Textual drops, once its key is removed, only when `compact` is set, which it never is.
    Forcing an update of the unchanged `compact` drops them."""

    async def recompose(self) -> None:
        await super().recompose()
        self.mutate_reactive(Footer.compact)


class ClippedInput(Input):
    """An editor that, while not being typed in, shows `…` where its text runs past either
    end, so a cut prompt never passes for the whole of it."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if y or self.has_focus or not self.value:
            return strip
        width, scroll_x = self.scrollable_content_region.width, self.scroll_offset.x
        cut_left, cut_right = scroll_x > 0, self._value.cell_len > scroll_x + width
        ellipsis = Strip([Segment("…", self.rich_style)])
        middle = strip.crop(int(cut_left), width - int(cut_right))
        parts = [ellipsis] * cut_left + [middle] + [ellipsis] * cut_right + [strip.crop(width)]
        return Strip.join(parts)


class PromptInput(ClippedInput):
    """The prompt, on one line: a newline is written \\n, other invisible characters as
    escapes, so pasted text cannot put control characters on the terminal."""

    BINDINGS = [
        Binding("enter", "submit", "run prompt"),
        Binding("escape", "leave", "leave prompt", key_display="esc"),
        # q types a q here: say how to quit, which the app's footer key cannot
        Binding("ctrl+q", "app.quit", "quit", key_display="ctrl+q", priority=True),
        # tab leaves as esc does: moving on must not leave an edit in the bar that never ran
        Binding("tab", "leave('next')", "leave prompt", show=False),
        Binding("shift+tab", "leave('previous')", "leave prompt", show=False),
    ]

    def action_leave(self, to: str | None = None) -> None:
        self.post_message(PromptLeft(to))

    def _on_paste(self, event: events.Paste) -> None:
        event.prevent_default()
        event.stop()
        # Terminals send a pasted line break as the Enter key's CR (tmux, xterm) or as CR LF.
        text = editable(event.text.replace("\r\n", "\n").replace("\r", "\n"))
        selection = self.selection
        if selection.is_empty:
            self.insert_text_at_cursor(text)
        else:
            self.replace(text, *selection)


class Pane(ScrollView, can_focus=True, inherit_bindings=False):
    """A bordered pane showing one view, titled with its name. Lines that do not fit are
    windowed around the view's focus line (the selected token) until the user scrolls them
    with the keys, the mouse wheel or the scrollbar."""

    ALLOW_MAXIMIZE = True
    SCROLL_HINTS = (" (↑↓ scroll, z zoom)", " (↑↓)")  # for wide and narrow panes
    # Not inherited: ScrollView's left and right would scroll sideways, not move the query.
    BINDINGS = [
        Binding("up", "scroll(-1)", "scroll up", show=False),
        Binding("down", "scroll(1)", "scroll down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        # home and end move the query (the app's keys): these scroll to either end.
        Binding("ctrl+home", "scroll_home", "top", show=False),
        Binding("ctrl+end", "scroll_end", "bottom", show=False),
    ]

    scope: reactive[Scope | None] = reactive(None, repaint=False)
    captioned: reactive[bool] = reactive(False, repaint=False)

    def __init__(self, view: PaneSpec) -> None:
        super().__init__(id=view.id, classes="pane")
        self.view = view
        self.border_title = view.title
        self.following = True  # the window follows the focus line, not the scroll offset
        self._drawn: tuple[Scope | None, Size, int, Drawn] | None = None
        self._strips: tuple[tuple, list[Strip]] | None = None

    def watch_scope(self, old: Scope | None, new: Scope | None) -> None:
        if old is None or new is None or selection_moved(old, new):
            self.following = True
        if old is None or new is None or self.view.depends(old) != self.view.depends(new):
            self.refresh()

    def watch_captioned(self) -> None:
        self.refresh()

    def caption_rows(self) -> int:
        """The caption's line, when shown and there is room for more than it."""
        return 1 if self.captioned and self.view.caption and self.content_size.height > 1 else 0

    def caption(self) -> Text:
        width = self.content_size.width
        return Text(longest_fitting(self.view.caption, width), CAPTION)

    def fit_scrolling(self) -> None:
        """Size the scrolled area to the drawn lines, so the scrollbar shows how many are
        hidden, and while following, put its offset where the focus window is. Done after
        each new drawing is painted, not on each new scope: a pane hidden by a zoomed one
        is not drawn at all."""
        drawn = self.drawn()
        self.virtual_size = Size(self.content_size.width, len(drawn.lines))
        if self.following:
            self.scroll_to(y=self.first_line(drawn, self.scrolling_height()), animate=False)

    def drawn(self) -> Drawn:
        """The view drawn to fit the pane, one column narrower when its lines do not fit
        in height: the scrollbar takes that column."""
        size = self.content_size
        if size.width <= 0 or size.height <= 0:  # squeezed to nothing by a tiny terminal
            return Drawn()
        height = size.height - self.caption_rows()
        cached = self._drawn
        if cached is not None and cached[:3] == (self.scope, size, height):
            return cached[3]
        drawn = self.view.render(self.scope, size.width, height)
        scrollbar = self.styles.scrollbar_size_vertical
        if len(drawn.lines) > height and size.width > scrollbar:
            drawn = self.view.render(self.scope, size.width - scrollbar, height)
        self._drawn = (self.scope, size, height, drawn)
        return drawn

    def first_line(self, drawn: Drawn, height: int) -> int:
        """The first of the scrolling lines (those after the pinned ones) to show."""
        scrolling = len(drawn.lines) - drawn.pinned - drawn.footer
        last = max(scrolling - height, 0)
        if self.following:
            return min(max(drawn.focus - drawn.pinned - height // 2, 0), last)
        return min(max(self.scroll_offset.y, 0), last)

    def render_line(self, y: int) -> Strip:
        strips = self.strips()
        if y < len(strips):
            return strips[y]
        return Strip.blank(self.content_size.width, self.visual_style.rich_style)

    def strips(self) -> list[Strip]:
        """The shown lines as strips, converted by Rich directly. Textual's own path from a
        renderable (through its Content) costs about 30 µs per styled span, ten times
        Rich's, and a pane of heat-map cells has hundreds of spans."""
        scrolled_to = None if self.following else self.scroll_offset.y
        key = (self.scope, scrolled_to, self.content_size, self.visual_style, self.captioned)
        if self._strips is None or self._strips[0] != key:
            base = self.visual_style.rich_style
            console, theme = self.app.console, self.app.ansi_theme
            strips = [to_strip(line, console, base, theme) for line in self.shown_lines()]
            self._strips = (key, strips)
            self.call_after_refresh(self.fit_scrolling)
        return self._strips[1]

    def shown_lines(self) -> list[Text]:
        """The pinned lines, then the window of the rest that fits, with more-above and
        more-below notes in place of its first and last lines when lines are hidden."""
        if self.scope is None:
            return []
        drawn = self.drawn()
        pinned = [self.caption()] if self.caption_rows() else []
        pinned += drawn.lines[: drawn.pinned]
        end = len(drawn.lines) - drawn.footer
        rest, footer = drawn.lines[drawn.pinned : end], list(drawn.lines[end:])
        height = max(self.content_size.height - len(pinned) - len(footer), 0)
        start = self.first_line(drawn, height)
        lines = list(rest[start : start + height])
        if start > 0 and lines:
            lines[0] = Text(f"▴ {count(start + 1, 'more line')} above", NOTE)
        below = len(rest) - start - len(lines)
        if below > 0 and len(lines) > 1:
            hint = self.SCROLL_HINTS[0 if self.content_size.width >= 40 else 1]
            lines[-1] = Text(f"▾ {count(below + 1, 'more line')}{hint}", NOTE)
        return [*pinned, *lines, *footer]

    def scrolling_height(self) -> int:
        drawn = self.drawn()
        return max(self.content_size.height - self.caption_rows() - drawn.pinned - drawn.footer, 0)

    def scroll_lines_to(self, start: int) -> None:
        """Show the scrolling lines from `start` on, and stop following the focus."""
        self.fit_scrolling()
        self.following = False
        self.scroll_to(y=start, animate=False)
        self.refresh()

    def action_scroll(self, delta: int) -> None:
        self.scroll_lines_to(self.first_line(self.drawn(), self.scrolling_height()) + delta)

    def action_page(self, direction: int) -> None:
        """Scroll by what is in view less the two lines the more-above and more-below notes
        cover, so no line is skipped."""
        self.action_scroll(direction * max(self.scrolling_height() - 2, 1))

    def action_scroll_home(self) -> None:
        self.scroll_lines_to(0)

    def action_scroll_end(self) -> None:
        self.scroll_lines_to(len(self.drawn().lines))

    # The wheel and the scrollbar scroll through Textual's own handlers; these only say
    # that the user has taken over from the focus.

    def on_mouse_scroll_down(self) -> None:
        self.stop_following()

    def on_mouse_scroll_up(self) -> None:
        self.stop_following()

    def on_scroll_to(self) -> None:
        self.stop_following()

    def on_scroll_up(self) -> None:
        self.stop_following()

    def on_scroll_down(self) -> None:
        self.stop_following()

    def stop_following(self) -> None:
        if self.allow_vertical_scroll:
            self.following = False
            self.refresh()


class AttentionPane(Pane):
    """The pattern always fits (the view draws the window around the query), so the arrows
    that scroll other panes move the query row here."""

    BINDINGS = [
        Binding("up", "app.query(-1)", "earlier query", show=False),
        Binding("down", "app.query(1)", "later query", show=False),
    ]


def to_strip(line: Text, console: Console, base: Style, theme: TerminalTheme) -> Strip:
    """One line of text as a strip over the widget's `base` style (Textual pads or crops it
    to the pane's width), each colour made readable on the theme's background. The line's
    own style goes under its spans as well: Rich leaves it out of a text without any."""
    style = base + console.get_style(line.style, default=Style.null())
    segments = side_by_side(line, style)
    if segments is None:
        segments = list(Segment.apply_style(line.render(console), style))
    segments = [
        Segment(text, readable(s, theme, is_cells(text)) if s else s, control)
        for text, s, control in segments
    ]
    return Strip(segments, line.cell_len)


def side_by_side(line: Text, style: Style) -> list[Segment] | None:
    """The segments of a line whose spans are in order and do not overlap, as the views'
    cell maps are: a segment per span and per gap, without Rich's general renderer, which
    works out a style stack at every span boundary. None for any other line."""
    text, segments, at = line.plain, [], 0
    for span in line.spans:
        if span.start < at or span.end > len(text) or not isinstance(span.style, Style):
            return None
        if span.start > at:
            segments.append(Segment(text[at : span.start], style))
        if span.end > span.start:
            segments.append(Segment(text[span.start : span.end], style + span.style))
        at = max(at, span.end)
    if at < len(text):
        segments.append(Segment(text[at:], style))
    return segments


def readable_on(style: Style, base: Style, widget: Widget) -> Style:
    """A span's `style` as `readable` makes it over `base`, without `base` itself."""
    over = readable(base + style, widget.app.ansi_theme, cell=False)
    return style if over.color == (base + style).color else style + Style(color=over.color)


def selection_moved(old: Scope, new: Scope) -> bool:
    a, b = old.settings, new.settings
    return (a.layer, a.head, old.query) != (b.layer, b.head, new.query) or (
        old.prompt_length != new.prompt_length
    )
