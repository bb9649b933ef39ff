"""The data options' choices and the default data's name, importable without pandas or pyarrow (every command's
`--help` lists them); `readers`, `cache` and `sequences` use them from here."""

DEFAULT_DATA = "synthetic"  # stands for the built-in generated data wherever a log path goes
FORMATS = ("auto", "csv", "tsv", "parquet", "ml-100k", "ml-1m", "ml-latest")
ENGINES = ("auto", "pandas", "duckdb")
TIE_BREAKS = ("file", "item")
POOLS = ("log", "catalogue")
