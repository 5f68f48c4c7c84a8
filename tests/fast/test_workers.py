"""The kept threads that run jobs' runners and output readers (agent/hatrain/agent/workers.py)."""

import functools
import threading

from hatrain.agent.workers import Workers

from tests.support.harness import poll


def test_a_finished_task_leaves_its_thread_for_the_next_named_as_the_task() -> None:
    """Tasks run one after another reuse one thread, named after each task while it runs; a
    task that raises leaves the thread able to run the next one."""
    workers = Workers("test-worker")
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def record() -> None:
        me = threading.current_thread()
        seen.append((me.name, me.ident or 0))
        done.set()

    def fail() -> None:
        raise RuntimeError("a failing task")

    for name in ("job-a", "job-b"):
        done.clear()
        workers.run(name, record)
        assert done.wait(10)
        poll(lambda: workers._idle == 1, 10, "the worker to be idle again")
    workers.run("job-failing", fail)
    poll(lambda: workers._idle == 1, 10, "the worker to be idle after a failing task")
    done.clear()
    workers.run("job-c", record)
    assert done.wait(10)
    assert [name for name, _ in seen] == ["job-a", "job-b", "job-c"]
    assert len({ident for _, ident in seen}) == 1


def test_tasks_at_once_each_get_a_thread() -> None:
    """Tasks that wait for each other all run at once: none waits for a thread to be free."""
    workers = Workers("test-worker")
    count = 8
    barrier = threading.Barrier(count, timeout=10)
    passed: list[int] = []

    def meet(i: int) -> None:
        barrier.wait()
        passed.append(i)

    for i in range(count):
        workers.run(f"task-{i}", functools.partial(meet, i))
    poll(lambda: len(passed) == count, 10, "every task to pass the barrier")
