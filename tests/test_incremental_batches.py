"""Incremental occlusion's batches: cut short where a batch would compute more than
BATCH_SLACK times its positions' own windows, never longer than asked, every position once."""
from deconvviz.engine.passes.windows import cut_batches


def test_batches_end_where_the_windows_would_grow_too_much():
    # one convolution, 1 multiply-add per output; windows 4x4 for positions 0-5, 8x8 for 6-9
    h = [4] * 6 + [8] * 4
    convs = [(1, h, h)]
    order = list(range(10))
    # batch_size 8: at least 2 per batch before a cut; adding the first 8x8 window to six
    # 4x4 ones would compute 7 * 64 = 448 against 6 * 16 + 64 = 160 of their own
    assert cut_batches(order, convs, 8, 1.05) == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    # a slack that allows it: one batch of 8, then the rest
    assert cut_batches(order, convs, 8, 3.0) == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9]]
    # never shorter than a quarter of the batch size, whatever the cost
    assert cut_batches([0, 6, 1, 7, 2, 8], convs, 8, 1.0) == [[0, 6], [1, 7], [2, 8]]
    assert cut_batches([], convs, 8, 1.05) == []
