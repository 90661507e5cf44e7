"""Figures shared by every command: the image grid keeps its layout whatever the count."""

import numpy as np
import torch

from vaediff.figures import save_figure, tile


def test_tile_places_each_image_in_its_cell_with_a_gutter():
    images = torch.stack([torch.full((1, 4, 4), value) for value in (0.1, 0.2, 0.3, 0.4, 0.5)])
    canvas = tile(images, columns=3, padding=2)
    assert canvas.shape == (2 * 6 + 2, 3 * 6 + 2)
    for index, value in enumerate((0.1, 0.2, 0.3, 0.4, 0.5)):
        row, column = divmod(index, 3)
        cell = canvas[2 + 6 * row : 6 + 6 * row, 2 + 6 * column : 6 + 6 * column]
        assert np.allclose(cell, value), index
    assert np.allclose(canvas[8:12, 14:18], 0.15)  # the sixth cell is empty
    assert tile(images[:1], columns=1).shape == (8, 8)  # a lone image keeps its gutter
    assert tile(images[:2], columns=5).shape == (8, 5 * 6 + 2)  # a short row keeps its columns


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    from vaediff.figures import plt

    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    save_figure(figure, tmp_path / "line.png")
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(figure.number)
