"""A protoc plugin that produces *_pb2_grpc.py by running grpcio-tools' protoc.

buf speaks the plugin protocol (CodeGeneratorRequest on stdin); grpcio-tools
only offers the grpc_python generator built into its own protoc. We write the
request's descriptors to a file, run that protoc on it, and return its output.
"""

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = pathlib.Path(tmp, "set.bin")
        descriptors.write_bytes(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = pathlib.Path(tmp, "out")
        out.mkdir()
        code = protoc.main(
            ["protoc", f"--descriptor_set_in={descriptors}", f"--grpc_python_out={out}"]
            + list(request.file_to_generate)
        )
        if code != 0:
            response.error = f"grpc_tools.protoc exited with {code}"
        for path in sorted(out.rglob("*.py")):
            generated = response.file.add()
            generated.name = str(path.relative_to(out))
            generated.content = path.read_text()
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
