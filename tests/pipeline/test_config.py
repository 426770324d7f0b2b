import pytest

from pipeline.config import ConfigError, load_build, parse_build

GOOD = """
[build]
name = "t"
output = "out"
seed = 3

[[sources]]
name = "web"
uri = "data/web.jsonl"
format = "jsonl"
domain = "general"
meta = { crawl = "2024" }

[[sources]]
name = "remote"
uri = "s3://bucket/x/*.parquet"
format = "parquet"

[ingest]
max_doc_bytes = 1000
"""


def test_good_file_parses_into_frozen_typed_sections():
    cfg = parse_build(GOOD, "/builds/b.toml")
    assert cfg.build.name == "t" and cfg.build.seed == 3
    assert cfg.build.output == "/builds/out"
    assert cfg.sources[0].uri == "/builds/data/web.jsonl"
    assert cfg.sources[1].uri == "s3://bucket/x/*.parquet"
    assert cfg.sources[0].meta == {"crawl": "2024"}
    assert cfg.ingest.max_doc_bytes == 1000
    with pytest.raises(AttributeError):
        cfg.build.seed = 4


def test_demo_config_loads():
    cfg = load_build("configs/demo.toml")
    assert cfg.build.name == "demo"
    assert cfg.output_uri("ingest").endswith("out/demo/build/ingest")


@pytest.mark.parametrize(
    "edit, message",
    [
        (("seed = 3", "sede = 3"), "unknown key 'build.sede'"),
        (("seed = 3", 'seed = "three"'), "'build.seed' must be an integer"),
        (('format = "parquet"', 'format = "csv"'), "'sources[1].format' must be one of"),
        (('domain = "general"', 'domain = "poetry"'), "domain 'poetry' is not one of"),
        (("max_doc_bytes = 1000", "max_doc_bytes = -1"), "max_doc_bytes must be positive"),
        (('name = "remote"', 'name = "web"'), "source names must be unique"),
        (('uri = "data/web.jsonl"\n', ""), "missing required key 'sources[0].uri'"),
        (("[ingest]", "[ingest\n"), "not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_the_file(edit, message):
    old, new = edit
    with pytest.raises(ConfigError) as err:
        parse_build(GOOD.replace(old, new, 1), "/builds/b.toml")
    assert message in str(err.value)
    assert "/builds/b.toml" in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_build(str(tmp_path / "nope.toml"))
