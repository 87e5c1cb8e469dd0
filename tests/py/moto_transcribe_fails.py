"""moto server, plus one behaviour moto lacks: Transcribe jobs that FAIL.

moto implements StartTranscriptionJob/GetTranscriptionJob but never moves a
job to FAILED. For the worker's failure test, GetTranscriptionJob of a job
whose media key contains "FAIL" answers as Amazon Transcribe documents a
failed job: TranscriptionJobStatus FAILED with a FailureReason and no
Transcript. This patches only that answer; it is a stub of that one
behaviour, not the service. Everything else is moto as installed.

Usage: python moto_transcribe_fails.py -H 127.0.0.1 -p PORT
"""
import sys

from moto.transcribe import models

REASON = "The media format that you specified doesn't match the detected media format."

_original = models.FakeTranscriptionJob.response_object


def _response_object(self, response_type):
    out = _original(self, response_type)
    if response_type == "GET" and "FAIL" in (self.media or {}).get("MediaFileUri", ""):
        job = out["TranscriptionJob"]
        if job.get("TranscriptionJobStatus") == "COMPLETED":
            job["TranscriptionJobStatus"] = "FAILED"
            job["FailureReason"] = REASON
            job.pop("Transcript", None)
    return out


models.FakeTranscriptionJob.response_object = _response_object

from moto.server import main  # noqa: E402  (after the patch, on purpose)

sys.exit(main(sys.argv[1:]))
