from soniq import JobStatus


async def test_enqueue_and_get(app):
    @app.job(name="smoke.add")
    async def add(x: int, y: int) -> int:
        return x + y

    job_id = await add.enqueue(x=1, y=2)
    job = await app.get_job(job_id)
    assert job is not None
    assert job["status"] is JobStatus.QUEUED
    assert job["args"] == {"x": 1, "y": 2}
    assert job["max_attempts"] == 4
