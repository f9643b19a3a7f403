"""One contract for every explorer widget of the course (the ``*_explorer`` functions).

An explorer is an ``ipywidgets.VBox`` of three rows: its controls (in one ``HBox``), an ``HTML``
readout with the numbers behind the picture, and the picture as PNG bytes in an ``Image`` widget
(not an ``Output`` widget: the saved notebook keeps the picture and running it headless stays
simple). Whenever a control's value changes, the explorer redraws its own ``matplotlib``
``Figure`` (a bare one: pyplot never sees it, so no figure is left open), then refreshes the
readout and the image. Sliders report on release (``continuous_update=False``), so one move is
one redraw.

Every explorer exposes the same attributes: ``.controls`` (``{name: widget}``), ``.figure``,
``.image``, ``.readout``, ``.draw_count`` (redraws so far) and ``.result`` (what the last draw
returned: counts, shares, ...). This module imports ipywidgets, so the topic modules import it
inside their ``*_explorer`` functions.

Sharp pictures: the figure's ``dpi`` is its *displayed* density (CSS pixels per inch), so it is shown
``width_in × dpi`` CSS pixels wide; the PNG is rendered :data:`PIXEL_RATIO` times denser and the
``<img>`` is pinned to the displayed width (shrinking, never stretching, when the column is narrower),
so text and lines stay crisp on a HiDPI screen instead of being a small bitmap stretched by the browser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

PIXEL_RATIO = 2
"""Device pixels per CSS pixel the PNG is rendered for (2: HiDPI/"retina" screens; sharp on 1× too)."""

Values = dict[str, Any]
"""The controls' current values, by control name."""


def figure_png(figure: Figure, pixel_ratio: float = PIXEL_RATIO) -> bytes:
    """``figure`` as PNG bytes, ``pixel_ratio`` times denser than its ``dpi`` (its displayed density)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=pixel_ratio * figure.dpi)
    return buffer.getvalue()


class Explorer(widgets.VBox):
    """Controls over a readout over a figure, redrawn whenever a control moves.

    Args:
        controls: ``{name: widget}``, in the order they are laid out (one row).
        draw: ``draw(values) -> result`` draws the picture for ``values`` on ``figure`` (clearing
            or updating it as it likes) and returns what the readout needs.
        figure: the explorer's own bare ``Figure``.
        readout: ``readout(result, values) -> str``, the HTML under the controls.
        adjust: optional ``adjust(name, values)``, called before drawing with the name of the
            control that changed; it may set other controls (e.g. keep two thresholds ordered):
            the changes it makes do not trigger redraws of their own.
        css_class: CSS class of the whole box (the browser tests find explorers by it).
        readout_class: CSS class of the readout.
    """

    def __init__(
        self,
        controls: Mapping[str, widgets.ValueWidget],
        draw: Callable[[Values], Any],
        figure: Figure,
        readout: Callable[[Any, Values], str],
        adjust: Callable[[str, Values], None] | None = None,
        css_class: str | None = None,
        readout_class: str | None = None,
    ):
        self.controls = dict(controls)
        self.figure = figure
        # max_width: a column narrower than the figure shrinks it (sharp), height follows the aspect
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.readout = widgets.HTML()
        if readout_class is not None:
            self.readout.add_class(readout_class)
        super().__init__([widgets.HBox(list(self.controls.values())), self.readout, self.image])
        if css_class is not None:
            self.add_class(css_class)
        self.draw_count = 0
        self.result: Any = None
        self._draw, self._readout, self._adjust = draw, readout, adjust
        self._busy = False
        names = {id(control): name for name, control in self.controls.items()}
        for control in self.controls.values():
            control.observe(lambda change: self.redraw(names[id(change["owner"])]), names="value")
        self.redraw()

    @property
    def display_width(self) -> int:
        """The picture's displayed width in CSS pixels: the figure's width in inches times its ``dpi``."""
        return round(self.figure.get_figwidth() * self.figure.dpi)

    @property
    def values(self) -> Values:
        """The controls' current values, by name."""
        return {name: control.value for name, control in self.controls.items()}

    def redraw(self, changed: str | None = None) -> None:
        """Draw for the current values (``changed``: the control that moved, ``None`` at start)."""
        if self._busy:  # a change made by ``adjust``: the redraw in progress covers it
            return
        self._busy = True
        try:
            if changed is not None and self._adjust is not None:
                self._adjust(changed, self.values)
            values = self.values
            self.result = self._draw(values)
            # render before touching the widgets, so the picture and the readout change together
            png, text = figure_png(self.figure, PIXEL_RATIO), self._readout(self.result, values)
            self.image.layout.width = f"{self.display_width}px"
            self.image.value = png
            self.readout.value = text
            self.draw_count += 1
        finally:
            self._busy = False


def float_slider(
    value: float,
    low: float,
    high: float,
    step: float,
    description: str,
    readout_format: str = ".2f",
    css_class: str | None = None,
    **kwargs: Any,
) -> widgets.FloatSlider:
    """A ``FloatSlider`` that reports on release (``continuous_update=False``), as every explorer's sliders do."""
    slider = widgets.FloatSlider(
        value=value,
        min=low,
        max=high,
        step=step,
        description=description,
        continuous_update=False,
        readout_format=readout_format,
        **kwargs,
    )
    if css_class is not None:
        slider.add_class(css_class)
    return slider


def image_selector(names: Sequence[str] | None, count: int) -> widgets.Dropdown:
    """A dropdown over ``count`` images, named ``names`` (default ``"image 0"``, ...), the first selected."""
    names = [f"image {i}" for i in range(count)] if names is None else list(names)
    return widgets.Dropdown(
        options=[(name, i) for i, name in enumerate(names)],
        value=0,
        description="image",
        layout=widgets.Layout(width="200px"),
    )
