"""run_batched: batched calls equal one-by-one calls; a bad item is skipped with its reason."""

from synground_assets.pipeline.batching import Progress, run_batched


def double(batch):
    if any(item == 3 for item in batch):
        raise ValueError("three is not allowed")
    return [2 * item for item in batch]


def test_batched_results_equal_one_by_one_results():
    items = list(range(10))
    batched, _ = run_batched([i for i in items if i != 3], 4, double, str)
    one_by_one, _ = run_batched([i for i in items if i != 3], 1, double, str)
    assert batched == one_by_one == [2 * i for i in items if i != 3]


def test_a_failing_item_is_skipped_with_its_reason_and_its_batch_mates_kept():
    results, skipped = run_batched(list(range(6)), 4, double, lambda item: f"item-{item}")
    assert results == [0, 2, 4, None, 8, 10]
    assert skipped == [("item-3", "ValueError: three is not allowed")]


def test_a_role_returning_the_wrong_number_of_results_is_retried_item_by_item():
    calls = []

    def short_answer(batch):
        calls.append(len(batch))
        return [item for item in batch][:1]

    results, skipped = run_batched([1, 2, 3], 3, short_answer, str)
    assert results == [1, 2, 3] and not skipped
    assert calls == [3, 1, 1, 1]


class Lines:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def test_progress_reports_to_a_plain_logger_when_done():
    log = Lines()
    run_batched(list(range(5)), 2, lambda batch: list(batch), str, Progress(log, "stage x", 5, every_s=3600))
    assert len(log.lines) == 1 and log.lines[0].startswith("stage x: 5/5 items")
