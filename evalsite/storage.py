"""Where artifacts live: the local filesystem by default, or an S3-compatible bucket.

Transcripts, diffs, before/after texts, raw logs, test output, rendered diffs and queued imports
all go through Django's default storage. On one machine that is ``MEDIA_ROOT``. With workers on
other machines it must be a bucket every process reaches (S3, MinIO, GCS through its S3 API): a
worker then needs only the database, the broker and the bucket, and the web never reads a
worker's disk. Configure it with one URL::

    MERGEABLE_STORAGE_URL=s3://BUCKET[/PREFIX]?endpoint_url=http://minio:9000&region=us-east-1

or with django-storages' usual variables (``AWS_STORAGE_BUCKET_NAME``, ``AWS_S3_ENDPOINT_URL``,
``AWS_S3_REGION_NAME``, ``AWS_LOCATION``). Keys come from ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (or anything else boto3 reads: a profile, an instance role), never from
the URL, so the URL can be logged and shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, HttpResponse, HttpResponseRedirect

S3_BACKEND = "storages.backends.s3.S3Storage"
# Signed download links live this long: enough for a browser to follow a redirect, too short to
# be worth passing around.
SIGNED_URL_SECONDS = 60

# Query parameters of MERGEABLE_STORAGE_URL -> S3Storage options.
_URL_OPTIONS = {
    "endpoint_url": "endpoint_url",
    "region": "region_name",
    "addressing_style": "addressing_style",
    "signature_version": "signature_version",
    "verify": "verify",
}


def from_url(url: str) -> dict:
    """The ``STORAGES["default"]`` entry for a ``MERGEABLE_STORAGE_URL``."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ImproperlyConfigured(
            f"MERGEABLE_STORAGE_URL must start with s3:// (an S3-compatible bucket), got {url!r}"
        )
    if parts.username or parts.password:
        raise ImproperlyConfigured(
            "MERGEABLE_STORAGE_URL must not hold keys: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY instead"
        )
    if not parts.hostname:
        raise ImproperlyConfigured(f"MERGEABLE_STORAGE_URL names no bucket: {url!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_URL_OPTIONS))
    if unknown:
        raise ImproperlyConfigured(
            f"MERGEABLE_STORAGE_URL has unknown parameters {', '.join(unknown)}; "
            f"known: {', '.join(_URL_OPTIONS)}"
        )
    options = {_URL_OPTIONS[key]: values[-1] for key, values in query.items()}
    if "verify" in options:
        options["verify"] = options["verify"].lower() not in ("0", "false", "no", "off")
    # The host part keeps the bucket's case as written (urlsplit lowers .hostname).
    bucket = parts.netloc.rsplit("@", 1)[-1]
    return _s3(bucket=bucket, location=parts.path.strip("/"), options=options)


# django-storages' variables -> S3Storage options (with AWS_STORAGE_BUCKET_NAME, AWS_LOCATION).
_AWS_OPTIONS = {
    "AWS_S3_ENDPOINT_URL": "endpoint_url",
    "AWS_S3_REGION_NAME": "region_name",
    "AWS_S3_ADDRESSING_STYLE": "addressing_style",
}
# Every variable the storage reads from the environment: these, and the keys, which boto3 reads.
AWS_VARIABLES = (
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_LOCATION",
    *_AWS_OPTIONS,
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def from_aws_environment(environ: Mapping[str, str]) -> dict | None:
    """The ``STORAGES["default"]`` entry from ``AWS_STORAGE_BUCKET_NAME`` and friends, if set."""
    bucket = environ.get("AWS_STORAGE_BUCKET_NAME", "").strip()
    if not bucket:
        return None
    options = {option: environ[name] for name, option in _AWS_OPTIONS.items() if environ.get(name)}
    return _s3(bucket=bucket, location=environ.get("AWS_LOCATION", "").strip("/"), options=options)


def _s3(*, bucket: str, location: str, options: dict) -> dict:
    return {
        "BACKEND": S3_BACKEND,
        "OPTIONS": {
            "bucket_name": bucket,
            "location": location,
            # Artifacts are saved under exact names and rewritten (the transcript, as a run goes):
            # replace, never pick another name.
            "file_overwrite": True,
            "default_acl": None,  # private: the bucket's own policy, which should deny everyone
            "querystring_auth": True,
            "querystring_expire": SIGNED_URL_SECONDS,
            "signature_version": "s3v4",
            **options,
        },
    }


def is_remote(storage) -> bool:
    """Whether ``storage`` is somewhere else (a bucket) rather than this machine's disk."""
    return not isinstance(storage, FileSystemStorage)


def describe(storage) -> str:
    """Which store this is, for keys of in-process caches: two tests, or two sites in one
    process, must not share a cached artifact."""
    if not is_remote(storage):
        return f"file:{storage.location}"
    endpoint = getattr(storage, "endpoint_url", None) or ""
    return f"s3:{endpoint}/{getattr(storage, 'bucket_name', '')}/{getattr(storage, 'location', '')}"


def download_response(name: str, *, filename: str) -> HttpResponse:
    """A stored file as plain text for a browser, whichever store holds it; the caller has
    checked that the user may read it.

    From a bucket it is a redirect to a link signed for a minute when browsers can reach the
    bucket (MERGEABLE_STORAGE_SIGNED_DOWNLOADS), else it is streamed through this process, as a
    local file is. A missing file is an empty text.
    """
    content_type = "text/plain; charset=utf-8"
    # A stored name is ours (runs/<id>/...), but the header must stay one quoted token whatever.
    disposition = f'inline; filename="{filename.replace(chr(34), "")}"'
    if settings.MERGEABLE_STORAGE_SIGNED_DOWNLOADS and is_remote(default_storage):
        signed = default_storage.url(
            name,
            parameters={
                "ResponseContentType": content_type,
                "ResponseContentDisposition": disposition,
            },
            expire=SIGNED_URL_SECONDS,
        )
        response: HttpResponse = HttpResponseRedirect(signed)
    else:
        try:
            response = FileResponse(default_storage.open(name, "rb"), content_type=content_type)
        except FileNotFoundError:
            response = HttpResponse(b"", content_type=content_type)
        response["Content-Disposition"] = disposition
    response["X-Content-Type-Options"] = "nosniff"
    return response
