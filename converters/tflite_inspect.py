"""Read facts out of a .tflite flatbuffer without TensorFlow: operators, activation memory, probe models.

Uses the schema bindings shipped with tflite-micro (the device side has that package, not TensorFlow).
"""

from __future__ import annotations

from functools import cache

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

# Bytes per element of the tensor types a classifier can hold; sub-byte types round up to one byte.
_TYPE_BYTES = {
    schema.TensorType.FLOAT32: 4,
    schema.TensorType.FLOAT16: 2,
    schema.TensorType.BFLOAT16: 2,
    schema.TensorType.INT32: 4,
    schema.TensorType.UINT32: 4,
    schema.TensorType.INT64: 8,
    schema.TensorType.UINT64: 8,
    schema.TensorType.FLOAT64: 8,
    schema.TensorType.INT16: 2,
    schema.TensorType.UINT16: 2,
    schema.TensorType.INT8: 1,
    schema.TensorType.UINT8: 1,
    schema.TensorType.BOOL: 1,
    schema.TensorType.INT4: 1,
    schema.TensorType.COMPLEX64: 8,
    schema.TensorType.COMPLEX128: 16,
}


@cache
def _builtin_names() -> dict[int, str]:
    return {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }


@cache
def builtin_code(name: str) -> int:
    """The BuiltinOperator code of an op name such as "CONV_2D" (or "BUILTIN_<n>" for unnamed codes)."""
    if name.startswith("BUILTIN_") and name.removeprefix("BUILTIN_").isdigit():
        return int(name.removeprefix("BUILTIN_"))
    for code, op in _builtin_names().items():
        if op == name:
            return code
    raise KeyError(f"unknown TFLite builtin operator {name!r}")


def _load(model_bytes: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))


def _op_name(opcode: schema.OperatorCodeT) -> str:
    code = max(opcode.builtinCode, opcode.deprecatedBuiltinCode)
    if code == schema.BuiltinOperator.CUSTOM:
        custom = opcode.customCode.decode() if isinstance(opcode.customCode, bytes) else opcode.customCode
        return f"CUSTOM:{custom}"
    return _builtin_names().get(code, f"BUILTIN_{code}")


def operator_names(model_bytes: bytes) -> list[str]:
    """Sorted names of the operators the model's subgraphs actually use."""
    model = _load(model_bytes)
    used: set[str] = set()
    for subgraph in model.subgraphs or []:
        for op in subgraph.operators or []:
            used.add(_op_name(model.operatorCodes[op.opcodeIndex]))
    return sorted(used)


def activation_bytes(model_bytes: bytes) -> int:
    """Bytes of every tensor not backed by a constant buffer, batch 1, no memory reuse (an upper bound).

    Counts inputs, outputs and intermediates, and the float copies a float16 model dequantizes its
    weights into at load time.
    """
    model = _load(model_bytes)
    total = 0
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
            if buffer is not None and (
                (buffer.data is not None and len(buffer.data) > 0) or (buffer.size or 0) > 0
            ):
                continue
            shape = [] if tensor.shape is None else [max(int(d), 1) for d in tensor.shape]
            total += int(np.prod(shape, dtype=np.int64)) * _TYPE_BYTES.get(tensor.type, 4)
    return total


def single_op_model(op_name: str) -> bytes:
    """A one-operator model with no tensors: enough for TFLM to look the operator up in its resolver."""
    model = schema.ModelT()
    model.version = 3
    opcode = schema.OperatorCodeT()
    if op_name.startswith("CUSTOM:"):
        opcode.builtinCode = schema.BuiltinOperator.CUSTOM
        opcode.customCode = op_name.removeprefix("CUSTOM:")
    else:
        opcode.builtinCode = builtin_code(op_name)
    opcode.deprecatedBuiltinCode = min(opcode.builtinCode, 127)
    opcode.version = 1
    model.operatorCodes = [opcode]
    operator = schema.OperatorT()
    operator.opcodeIndex = 0
    operator.inputs = []
    operator.outputs = []
    subgraph = schema.SubGraphT()
    subgraph.tensors = []
    subgraph.inputs = []
    subgraph.outputs = []
    subgraph.operators = [operator]
    model.subgraphs = [subgraph]
    model.buffers = [schema.BufferT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
