"""A JSON request -> the model's raw input array, or a BadRequest that names the field at fault.

    {"inputs": [SAMPLE, ...]}   SAMPLE: nested lists of raw values of the model's input shape (a 1-channel
                                image may leave out its channel axis), or a base64 PNG (images only)
    {"rows": [{"age": 59, "sex": 2, ...}, ...]}   tables: one object per row, keyed by the training columns
    {"inputs": [FRAMES, ...]}   sequences: each a list of frames, each frame a list of the model's features (any
                                number of frames, at least one; a batch is padded in the worker)
    {"texts": ["a text", ...]}  texts: tokenized here with the run's tokenizer (its first max_length tokens)

Raw values are those the data module stores (digits 0..16, uint8 images 0..255, table rows in their units): the
backend applies the run's scaling and standardisation, so a client never re-implements them. A PNG's pixel
values are taken as the raw values. The same check runs twice: in the HTTP process, before a request joins a
batch (one bad request must not fail the batch it would have joined), and in the worker, on trusted input.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NUMBER_KINDS = "iuf"  # numpy kinds of JSON numbers: booleans, strings and nulls are not pixel values


class BadRequest(ValueError):
    """A request the model cannot take: `field` is where in the JSON body (inputs[3], rows[0].bmi, body)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


@dataclass
class InputSpec:
    """What one sample must look like: the facts of model.json (input_shape, input_dtype, features)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    features: list[str] = field(default_factory=list)
    max_samples: int = 256
    sequence: bool = False  # shape is then one frame's: a sample is (frames, *shape), any number of frames
    tokenizer: str | None = None  # a text model's tokenizer (its JSON): requests bring texts
    max_length: int = 0  # a text's tokens kept

    @classmethod
    def from_facts(cls, facts: dict[str, Any], max_samples: int = 256) -> InputSpec:
        dims = facts["input_shape"][1:]  # ["batch", C, H, W], or ["batch", "time", features] for sequences
        sequence = bool(dims) and dims[0] == "time"
        shape = tuple(int(n) for n in dims[sequence:])
        features = list(facts.get("features") or [])
        text = facts.get("tokenizer_json"), int(facts.get("max_length", 0))
        return cls(shape, facts.get("input_dtype", "float32"), features, max_samples, sequence, *text)

    def decode(self, payload: Any) -> np.ndarray | list[np.ndarray]:
        """The batch of raw inputs a request holds, of shape (n, *shape) and the model's dtype (sequences and
        texts: a list of arrays of their own lengths)."""
        if not isinstance(payload, dict) or len({"inputs", "rows", "texts"} & set(payload)) != 1:
            raise BadRequest("body", f"expected a JSON object with one key: {self.example()}", 400)
        key = next(k for k in ("rows", "texts", "inputs") if k in payload)
        if (key == "texts") != bool(self.tokenizer):
            raise BadRequest(key, f"this model takes {self.example()}", 400)
        items = payload[key]
        if not isinstance(items, list) or not items:
            raise BadRequest(key, "expected a non-empty list of samples")
        if len(items) > self.max_samples:
            raise BadRequest(key, f"{len(items)} samples; at most {self.max_samples} per request (--max_samples)", 413)
        if key == "texts":
            return self.texts(items)
        if key == "rows":
            return np.stack([self.row(r, f"rows[{i}]") for i, r in enumerate(items)])
        if self.sequence:  # of their own lengths: padded when the worker batches them (backends.pad_sequences)
            return [self.frames(s, f"inputs[{i}]") for i, s in enumerate(items)]
        return np.stack([self.sample(s, f"inputs[{i}]") for i, s in enumerate(items)])

    def frames(self, value: Any, where: str) -> np.ndarray:
        """One sequence: a non-empty list of frames of the model's shape."""
        if not isinstance(value, list) or not value:
            raise BadRequest(where, f"expected a non-empty list of frames, each of shape {list(self.shape)}")
        try:
            array = np.asarray(value)
        except ValueError:
            raise BadRequest(where, f"frames of different sizes; each must have shape {list(self.shape)}") from None
        if array.shape[1:] != self.shape:
            raise BadRequest(where, f"frames of shape {list(array.shape[1:])}; expected {list(self.shape)}")
        return self.checked(array, where, array.shape)

    def texts(self, items: list[Any]) -> list[np.ndarray]:
        """Texts as their token ids, as the data module tokenizes them (proj.data.text.token_ids)."""
        from proj.data.text import token_ids

        for i, text in enumerate(items):
            if not isinstance(text, str) or not text.strip():
                raise BadRequest(f"texts[{i}]", f"{str(text)[:40]!r}: expected a non-empty string")
        return [np.array(ids, dtype=np.int64) for ids in token_ids(self.text_tokenizer, items, self.max_length)]

    @functools.cached_property
    def text_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.tokenizer)

    def example(self) -> str:
        if self.tokenizer:
            return 'e.g. {"texts": ["a text", ...]}'
        if self.features:
            return f'e.g. {{"rows": [{{{", ".join(f"{f!r}: ..." for f in self.features[:3])}, ...}}]}}'
        if self.sequence:
            return f'e.g. {{"inputs": [[frame, frame, ...], ...]}}, each frame a list of shape {list(self.shape)}'
        return f'e.g. {{"inputs": [nested lists of shape {list(self.shape)}{" or base64 PNG" * self.is_image}]}}'

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def sample(self, value: Any, where: str) -> np.ndarray:
        if isinstance(value, str):
            if not self.is_image:
                raise BadRequest(where, f"a string; expected a list of {self.shape[0]} numbers")
            return self.checked(png_pixels(value, where, self.shape), where)
        try:
            array = np.asarray(value)
        except ValueError:  # ragged nested lists
            raise BadRequest(where, f"ragged nested lists; expected shape {list(self.shape)}") from None
        if self.is_image and self.shape[0] == 1 and array.shape == self.shape[1:]:
            array = array[None]  # a grey image without its channel axis
        return self.checked(array, where)

    def checked(self, array: np.ndarray, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if array.shape != (shape or self.shape):
            raise BadRequest(where, f"shape {list(array.shape)}; expected {list(self.shape)}")
        if array.dtype.kind not in NUMBER_KINDS:
            raise BadRequest(where, f"holds {kind_name(array)}; expected numbers ({self.dtype})")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise BadRequest(where, "holds NaN or infinity; expected finite numbers")
        if self.dtype.startswith(("uint", "int")):
            info = np.iinfo(self.dtype)
            if (array != np.round(array)).any() or array.min() < info.min or array.max() > info.max:
                raise BadRequest(where, f"expected whole numbers {info.min}..{info.max} ({self.dtype})")
        return self.cast(array, where)

    def cast(self, array: np.ndarray, where: str) -> np.ndarray:
        """The array in the model's dtype. A finite float64 beyond float32's range (1e39) becomes infinity there,
        which the model would turn into a prediction of NaN: checked after the cast, not only before."""
        with np.errstate(over="ignore", invalid="ignore"):
            cast = array.astype(self.dtype)
        if cast.dtype.kind == "f" and not np.isfinite(cast).all():
            largest = float(np.finfo(cast.dtype).max)
            raise BadRequest(
                where, f"holds values beyond {self.dtype}'s range (+-{largest:.3g}); expected finite numbers"
            )
        return cast

    def row(self, value: Any, where: str) -> np.ndarray:
        if not self.features:
            raise BadRequest("rows", 'this model takes "inputs" (it was not trained on named columns)', 400)
        if not isinstance(value, dict):
            raise BadRequest(where, f"expected an object keyed by the columns {self.features}")
        missing = [c for c in self.features if c not in value]
        if missing:
            raise BadRequest(f"{where}.{missing[0]}", f"missing column (every row needs {self.features})")
        unknown = sorted(set(value) - set(self.features))
        if unknown:
            raise BadRequest(f"{where}.{unknown[0]}", f"not a training column; the columns are {self.features}")
        numbers = []
        for column in self.features:
            number = value[column]
            if isinstance(number, bool) or not isinstance(number, int | float) or not finite_float(number):
                raise BadRequest(f"{where}.{column}", f"{str(number)[:40]!r} is not a finite number")
            self.cast(np.array([number], dtype=np.float64), f"{where}.{column}")  # within the model's dtype
            numbers.append(float(number))
        return np.array(numbers, dtype=self.dtype)  # each one fits: cast and checked above


def finite_float(number: int | float) -> bool:
    """Whether a JSON number is a finite float64 (an integer of 400 digits is not: float() overflows)."""
    try:
        return math.isfinite(float(number))
    except OverflowError:
        return False


def png_pixels(text: str, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """A base64 PNG (or any image PIL reads) as a (C, H, W) array of its pixel values. Its size is read from its
    header and checked against the model's (C, H, W) before any pixel is decoded: a 12000 x 12000 image is refused,
    not decoded into 144 MB first (and one past PIL's decompression-bomb limit is refused, not a 500)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
    except (binascii.Error, ValueError):
        raise BadRequest(where, "a string that is not base64; expected a base64 PNG or nested lists") from None
    except Image.DecompressionBombError:
        raise BadRequest(where, "an image past PIL's decompression-bomb limit; expected a small image", 413) from None
    except (UnidentifiedImageError, OSError):
        raise BadRequest(where, "base64 of something that is not an image; expected a PNG") from None
    found = (len(image.getbands()), image.height, image.width)
    if found[1:] != tuple(shape[1:]) or found[0] not in (1, shape[0]):
        raise BadRequest(where, f"an image of {found[0]} x {found[1]} x {found[2]}; expected {list(shape)}")
    try:
        pixels = np.asarray(image)
    except (OSError, ValueError):  # a truncated or corrupt image body behind a valid header
        raise BadRequest(where, "an image that cannot be decoded (truncated or corrupt); expected a PNG") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def kind_name(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "nulls or mixed values"}.get(array.dtype.kind, "?")
