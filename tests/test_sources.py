"""How a workload is given: module:attr import strings (imported in the worker only), Hugging Face
architectures by name or config (built offline), and what the run directory keeps of them."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from amp_advisor.cli import cli
from amp_advisor.errors import BadInputError
from amp_advisor.hf import HfSpec
from amp_advisor.workload_source import Kind, WorkloadSource

WORKLOADS = Path(__file__).parent / "workloads"
IMPORTABLE = WORKLOADS / "importable"
# the smallest shapes that still are the architecture: a few seconds per trial on a CPU
TINY_HF = ["--hf-layers", "1", "--hf-hidden", "64", "--hf-heads", "2", "--hf-vocab", "512", "--hf-seq-len", "16"]
QUICK_BENCH = ["--dtype", "bf16", "--batch-size", "2", "--steps", "2", "--warmup-steps", "1", "--device", "cpu"]


@pytest.fixture
def in_importable(monkeypatch):
    """The working directory the import strings resolve from (as uvicorn's)."""
    monkeypatch.chdir(IMPORTABLE)


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env)


def one_line_exit_2(result, message):
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


# ------------------------------------------------------------------------------ the ref
def test_every_kind_round_trips_through_its_ref_and_is_shown_as_given(tmp_path, in_importable):
    model = tmp_path / "model.py"
    model.write_text("def build_model(): pass\ndef make_batch(b, d): pass\n")
    run_dir = tmp_path / "reports" / "run"
    run_dir.mkdir(parents=True)
    cases = [
        (WorkloadSource.given(str(model)), Kind.FILE, "../../model.py", "model"),
        (WorkloadSource.given(example="mlp"), Kind.EXAMPLE, "example mlp", "mlp"),
        (WorkloadSource.given("wlpkg.workloads:tiny"), Kind.MODULE, "wlpkg.workloads:tiny", "tiny"),
        (WorkloadSource.given(hf=HfSpec(model_type="gpt2", layers=4)), Kind.HF, "--hf gpt2 --hf-layers 4",
         "hf-gpt2"),
    ]
    for source, kind, shown, name in cases:
        back = WorkloadSource.from_ref(source.ref)
        assert back == source and back.kind is kind and back.name == name
        assert back.shown(run_dir) == shown
    assert cases[2][0].search_path == str(IMPORTABLE)


def test_a_run_saved_before_the_kinds_reads_back_its_example_from_another_machine():
    old = WorkloadSource.from_ref("/work/main/amp_advisor/examples/transformer.py")
    assert old.kind is Kind.EXAMPLE and old.shown("/anywhere") == "example transformer"
    assert old.same_as(WorkloadSource.given(example="transformer"))


def test_a_ref_this_version_cannot_read_is_bad_input():
    with pytest.raises(BadInputError, match="not a workload this version reads"):
        WorkloadSource.from_ref('{"kind": "jax"}')


# ------------------------------------------------------------------------------ module:attr
@pytest.mark.parametrize("target, message", [
    ("wlpkg.nowhere:tiny", "no module named 'wlpkg.nowhere'"),
    ("wlpkg.workloads:missing", "wlpkg.workloads has no attribute 'missing'"),
    ("wlpkg.workloads:not_a_workload", "wlpkg.workloads:not_a_workload: missing make_batch"),
])
def test_import_strings_that_do_not_name_a_workload_are_one_line_exit_2(in_importable, target, message):
    one_line_exit_2(run("bench", target, *QUICK_BENCH), message)


def test_an_import_string_is_imported_in_the_worker_only(tmp_path, in_importable):
    mark = tmp_path / "imported-by"
    result = run("bench", "wlpkg.workloads:nested.inner", *QUICK_BENCH, "--json",
                 env={"AMP_ADVISOR_TEST_IMPORT_MARK": str(mark)})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["architecture"] == "Sequential" and doc["parameters"] == 16 * 32 + 32 + 33
    pids = {int(line) for line in mark.read_text().split()}
    assert pids and os.getpid() not in pids  # the worker imported it; this process never did


def test_tune_an_import_string_then_resume_report_and_show_it(tmp_path, in_importable):
    out = tmp_path / "run"
    args = ["--device", "cpu", "--batch-sizes", "4,8", "--strategy", "grid", "--steps", "2", "--out", str(out)]
    result = run("tune", "wlpkg.workloads:tiny", *args)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert WorkloadSource.from_ref(settings["workload"]).kind is Kind.MODULE
    assert "_wlpkg.workloads:tiny on " in (out / "report.md").read_text()
    again = run("tune", "--resume", "--out", str(out))
    assert again.exit_code == 0 and "already complete" in again.output
    assert run("report", str(out)).exit_code == 0
    shown = run("show", str(out), "--format", "json")
    assert shown.exit_code == 0 and json.loads(shown.output)["batch_size"] in (4, 8)
    other = run("tune", "wlpkg.workloads:nested.inner", "--resume", "--out", str(out))
    assert other.exit_code == 2 and "the workload wlpkg.workloads:nested.inner" in other.stderr


# ------------------------------------------------------------------------------ Hugging Face
try:  # the README's test command installs it (the frameworks extra); the tests above need none of it
    import transformers
except ImportError:  # pragma: no cover
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="needs transformers: pip install '.[hf]'")


@needs_transformers
@pytest.mark.parametrize("arch, model_class", [("gpt2", "GPT2LMHeadModel"), ("bert", "BertForMaskedLM")])
def test_hf_architectures_bench_offline(arch, model_class):
    result = run("bench", "--hf", arch, *TINY_HF, *QUICK_BENCH, "--json", env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["architecture"].startswith(f"{model_class} ({arch}")
    assert "1 layers, hidden 64, 2 heads, vocabulary 512, sequence 16" in doc["architecture"]


@needs_transformers
@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_hf_architectures_tune_offline_and_the_report_names_them(tmp_path, arch):
    out = tmp_path / arch
    result = run("tune", "--hf", arch, *TINY_HF, "--device", "cpu", "--batch-sizes", "2,4", "--strategy", "grid",
                 "--steps", "2", "--out", str(out), env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    assert "recommendation" in result.output
    md = (out / "report.md").read_text()
    assert f"| **given as** | --hf {arch} --hf-layers 1" in md
    assert "| **parameters** |" in md and "GFLOP (forward + backward" in md
    again = run("tune", "--resume", "--out", str(out))  # the run directory alone says what to build
    assert again.exit_code == 0 and "already complete" in again.output
    assert run("show", str(out), "--format", "json").exit_code == 0


@needs_transformers
def test_seq2seq_and_classification_get_inputs_of_their_task():
    for spec, keys in [(HfSpec(model_type="t5"), {"input_ids", "labels"}),
                       (HfSpec(model_type="gpt2", task="classification"), {"input_ids", "labels"})]:
        built = spec.checked().build()
        batch = built.make_batch(3, "cpu")
        assert set(batch) == keys
        loss = built.build_model()(**batch).loss
        assert loss.ndim == 0 and loss.requires_grad
    assert HfSpec(model_type="t5").checked().build().task == "seq2seq"
    assert HfSpec(model_type="gpt2", task="classification").checked().build().make_batch(3, "cpu")["labels"].shape \
        == (3,)


@needs_transformers
def test_a_bad_hf_name_lists_the_supported_model_types():
    result = run("bench", "--hf", "gtp2", *QUICK_BENCH)
    one_line_exit_2(result, "--hf 'gtp2': not a model type")
    assert "did you mean gpt2" in result.stderr and ", bert, " in result.stderr and ", llama, " in result.stderr


@needs_transformers
def test_hf_config_missing_malformed_or_not_a_config_is_one_line_exit_2(tmp_path):
    one_line_exit_2(run("bench", "--hf-config", str(tmp_path / "nope.json"), *QUICK_BENCH), "no such file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one_line_exit_2(run("bench", "--hf-config", str(bad), *QUICK_BENCH), "not valid JSON")
    bad.write_text('{"hidden_size": 8}')
    one_line_exit_2(run("bench", "--hf-config", str(bad), *QUICK_BENCH), 'no "model_type" in it')
    one_line_exit_2(run("bench", "--hf-layers", "2", *QUICK_BENCH), "give --hf ARCH or --hf-config PATH too")
    one_line_exit_2(run("bench", "--hf", "gpt2", "--hf-hidden", "65", "--hf-heads", "2", *QUICK_BENCH),
                    "--hf-hidden 65 is not a multiple of --hf-heads 2")


@needs_transformers
def test_hf_config_builds_at_the_files_own_sizes(tmp_path):
    config = transformers.AutoConfig.for_model("llama", num_hidden_layers=1, hidden_size=64, num_attention_heads=2,
                                               intermediate_size=128, vocab_size=300, max_position_embeddings=32)
    config.save_pretrained(tmp_path / "tiny-llama")
    (tmp_path / "tiny-llama" / "config.json").rename(tmp_path / "llama-1.json")  # any file name
    for given in (tmp_path / "llama-1.json", tmp_path):
        if given == tmp_path:
            (tmp_path / "llama-1.json").rename(tmp_path / "config.json")  # a directory holding config.json
        result = run("bench", "--hf-config", str(given), *QUICK_BENCH, "--json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert "LlamaForCausalLM (llama, causal-lm): 1 layers, hidden 64, 2 heads, vocabulary 300, sequence 32" \
            == doc["architecture"]
