"""Ask a model server for a prediction over the Open Inference Protocol's gRPC
(KServe v2), with stubs generated from proto/inference/grpc_service.proto:

    mkdir -p stubs && python3 -m grpc_tools.protoc -I proto --python_out=stubs --grpc_python_out=stubs proto/inference/grpc_service.proto
    touch stubs/inference/__init__.py
    PYTHONPATH=stubs python3 docs/examples/kserve_infer.py localhost:8081 mnist-mlp digit.json

digit.json is a REST request body ({"inputs": [{"name", "shape", "datatype", "data"}]});
its one input is sent as raw little-endian float32 (raw_input_contents), as Triton's and
KServe's clients do. Needs only grpcio and protobuf.
"""

import array
import json
import sys

import grpc

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc


def main(address, model, path):
    with open(path) as f:
        tensor = json.load(f)['inputs'][0]
    values = array.array('f', tensor['data'])
    if sys.byteorder != 'little':
        values.byteswap()
    request = pb.ModelInferRequest(model_name=model, id='example')
    request.inputs.add(name=tensor['name'], datatype=tensor['datatype'], shape=tensor['shape'])
    request.raw_input_contents.append(values.tobytes())
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        print('live:', stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live)
        response = stub.ModelInfer(request, timeout=10)
    out = response.outputs[0]
    scores = array.array('f')
    scores.frombytes(response.raw_output_contents[0])
    if sys.byteorder != 'little':
        scores.byteswap()
    print(f'{response.model_name} version {response.model_version}: {out.name} {out.datatype} {list(out.shape)}')
    width = out.shape[-1]
    for row in range(len(scores) // width):
        p = scores[row * width:(row + 1) * width]
        best = max(range(width), key=lambda i: p[i])
        print(f'  example {row}: class {best} ({p[best]:.4f})')


if __name__ == '__main__':
    if len(sys.argv) != 4:
        sys.exit('usage: kserve_infer.py HOST:PORT MODEL REQUEST.json')
    main(*sys.argv[1:])
