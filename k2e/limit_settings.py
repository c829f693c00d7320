"""The settings that bound what one request and one dataset file may ask for: the
dataset readers' limits (k2e/formats) and the spec limits (k2e/spec). ``Settings``
(k2e.settings) adds the rest; read them from there."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LimitSettings(BaseSettings):
    """What every dataset reader and every POST /convert is held to."""

    model_config = SettingsConfigDict(env_prefix="K2E_", extra="ignore")

    # Dataset reading limits (k2e/formats): what every dataset reader (the API's inspection
    # sandbox and the worker's loaders) refuses, whatever a file declares, before allocating.
    max_record_bytes: int = Field(
        default=64 * 1024**2,
        ge=1024,
        description="A TFRecord record's declared length; a longer one is refused before it "
        "is read.",
    )
    max_inflated_bytes: int = Field(
        default=16 * 1024**3,
        ge=1024**2,
        description="The most bytes a compressed dataset (a `.tfrecord.gz`, an `.npz`'s "
        "members together) may inflate to.",
    )
    max_inflation_ratio: float = Field(
        default=200.0,
        ge=1,
        description="The most a compressed dataset (or an `.npz` member) may inflate "
        "relative to its compressed size; inflation under 1 MiB is never refused for its "
        "ratio.",
    )
    max_csv_columns: int = Field(default=10_000, ge=1, description="A CSV's columns.")
    max_csv_field_bytes: int = Field(default=1024**2, ge=64, description="Bytes of one CSV field.")

    # Spec limits (k2e/spec): what one request to POST /convert may ask for. Beyond them
    # the answer is a 4xx naming the field and the limit, before anything is kept.
    max_json_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Bytes of a JSON body of `POST /convert` (or its multipart `spec` part); "
        "413 while it arrives.",
    )
    max_json_depth: int = Field(
        default=64,
        ge=8,
        le=150,
        description="Nesting of objects and arrays in that body; 422, counted before it is parsed.",
    )
    max_multipart_parts: int = Field(
        default=8, ge=1, description="Parts of a multipart `POST /convert` (422 beyond)."
    )
    max_field_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Bytes of each text part of a multipart `POST /convert` (413 beyond).",
    )
    max_batch_size: int = Field(
        default=65_536, ge=1, description="`train.batch_size` and `eval.batch_size`."
    )
    max_shuffle_buffer: int = Field(
        default=1_000_000, ge=1, description="`train.shuffle_buffer`, in examples."
    )
    max_model_params: int = Field(
        default=100_000_000,
        ge=1,
        description="Parameters of a model, counted from its config before anything is "
        "built (a lower bound: the layers whose sizes the config tells).",
    )
    max_steps: int = Field(
        default=1_000_000_000,
        ge=1,
        description="`train.max_steps` and `eval.steps`, whatever a tenant's `max_steps` "
        "quota says.",
    )
    max_keep_checkpoints: int = Field(
        default=100,
        ge=1,
        description='`config.keep_checkpoint_max` at most (0, "keep all", is refused).',
    )
    max_checkpoints_per_job: int = Field(
        default=100_000,
        ge=1,
        description="Checkpoints one job may write (`max_steps / save_checkpoints_steps`).",
    )
    min_keep_checkpoint_every_n_hours: float = Field(
        default=1.0,
        gt=0,
        description="`config.keep_checkpoint_every_n_hours` at least (each such checkpoint "
        "is kept for good).",
    )
