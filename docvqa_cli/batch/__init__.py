"""Batch runs: a question file swept over many documents, resumable, never losing work.

The job reads top to bottom in ``job.run``: read the questions (``questions``), find the
documents (``discovery``), open the output and repair its torn tail (``output``), skip the
pairs it already holds, then for each document load its pages once (``prefetch``: in
background workers, ahead of the model) and answer its pending questions, writing each
record whole as soon as it exists. Who loads and answers is the engine's business (the
contract in ``engine``; ``local.local_engine``: this process, loading ahead in workers;
``ray.RayEngine``: Ray tasks and GPU actors); what is written, counted, shown and annotated
is ``run``'s, the same for both. See ARCHITECTURE.md.

The names below are the package's interface; the modules hold one job each.
"""

from docvqa_cli.batch.discovery import DOCUMENT_EXTENSIONS, find_documents, is_document
from docvqa_cli.batch.engine import ERROR_LIMIT, AnswerStep, Engine, Summary, failed_record, model_answerer
from docvqa_cli.batch.local import OOM_RETRY_FACTORS, answer_document, local_engine
from docvqa_cli.batch.output import FSYNC_INTERVAL_S, Done, Output, StreamOutput, check_target
from docvqa_cli.batch.prefetch import DEFAULT_JOBS, LoadFn, Prefetcher
from docvqa_cli.batch.questions import Question, read_questions
from docvqa_cli.batch.job import annotated_path, plan, resume_hint, run

__all__ = [
    "AnswerStep", "DEFAULT_JOBS", "DOCUMENT_EXTENSIONS", "Done", "ERROR_LIMIT", "Engine", "FSYNC_INTERVAL_S",
    "LoadFn", "OOM_RETRY_FACTORS", "Output", "Prefetcher", "Question",
    "StreamOutput", "Summary", "annotated_path", "answer_document", "check_target", "failed_record", "find_documents",
    "is_document", "local_engine", "model_answerer", "plan", "read_questions", "resume_hint", "run",
]
