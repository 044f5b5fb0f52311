"""Links from a job group id to the platform's own job page, where the base URL tells it."""

from __future__ import annotations

from urllib.parse import urlsplit


def job_url(base_url: str | None, job_group_id: object) -> str | None:
    """The job page of a job group on the platform at ``base_url``; None when unknown.

    Cloud Dataprep serves its API on ``api.clouddataprep.com`` and its pages on
    ``clouddataprep.com``; Designer Cloud / Alteryx Analytics Cloud serves both on one host
    (``us1.alteryxcloud.com``). The embedded emulator and other hosts have no known job page.
    """
    if not base_url or job_group_id is None or str(job_group_id) in ("", "<NA>", "nan"):
        return None
    ident = str(job_group_id)
    if not ident.isdigit():
        return None
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host:
        return None
    if host == "clouddataprep.com" or host.endswith(".clouddataprep.com"):
        site = host[len("api.") :] if host.startswith("api.") else host
        return f"https://{site}/jobs/{ident}"
    if host.endswith(".alteryxcloud.com"):
        return f"https://{host}/jobs/{ident}"
    return None
