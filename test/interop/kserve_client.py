"""An Open Inference Protocol (KServe v2) gRPC client in Python, from stubs
generated off proto/inference/grpc_service.proto.

Run by test/interop/python-kserve-client.test.ts with PYTHONPATH pointing at a
folder holding the stubs grpc_tools.protoc generated (modules
inference.grpc_service_pb2 and inference.grpc_service_pb2_grpc). Needs only
grpcio and protobuf: float32 values are packed with `array`, no numpy.

It asks ServerLive, ServerReady and ModelMetadata, runs ModelInfer once with
raw_input_contents and once with fp32_contents, sends one request the server
must refuse, and prints one JSON line with what it saw. The TypeScript test
asserts on that line.
"""

import argparse
import array
import json
import sys

import grpc

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

TIMEOUT_S = 10


def features(rows, width):
    """The known input: multiples of 1/4 in [-1, 1.5], exact in float32."""
    return [((i * 7) % 11) / 4 - 1 for i in range(rows * width)]


def le_bytes(values):
    a = array.array('f', values)
    if sys.byteorder != 'little':
        a.byteswap()
    return a.tobytes()


def from_le_bytes(data):
    a = array.array('f')
    a.frombytes(data)
    if sys.byteorder != 'little':
        a.byteswap()
    return list(a)


def answer(res):
    """What a ModelInferResponse says, with its raw output decoded."""
    return {
        'model_name': res.model_name,
        'model_version': res.model_version,
        'id': res.id,
        'outputs': [{'name': o.name, 'datatype': o.datatype, 'shape': list(o.shape)} for o in res.outputs],
        'raw_outputs': len(res.raw_output_contents),
        'values': from_le_bytes(res.raw_output_contents[0]) if res.raw_output_contents else [],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--address', required=True)
    p.add_argument('--model', required=True)
    p.add_argument('--rows', type=int, required=True)
    args = p.parse_args()

    seen = {}
    with grpc.insecure_channel(args.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        seen['live'] = stub.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT_S).live
        seen['ready'] = stub.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT_S).ready

        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=args.model), timeout=TIMEOUT_S)
        tensor = lambda t: {'name': t.name, 'datatype': t.datatype, 'shape': list(t.shape)}
        seen['metadata'] = {
            'name': meta.name,
            'versions': list(meta.versions),
            'platform': meta.platform,
            'inputs': [tensor(t) for t in meta.inputs],
            'outputs': [tensor(t) for t in meta.outputs],
        }
        inp = meta.inputs[0]
        width = inp.shape[1]
        x = features(args.rows, width)

        raw = pb.ModelInferRequest(model_name=args.model, id='py-raw')
        raw.inputs.add(name=inp.name, datatype=inp.datatype, shape=[args.rows, width])
        raw.raw_input_contents.append(le_bytes(x))
        seen['raw'] = answer(stub.ModelInfer(raw, timeout=TIMEOUT_S))

        contents = pb.ModelInferRequest(model_name=args.model, model_version=meta.versions[0], id='py-contents')
        t = contents.inputs.add(name=inp.name, datatype=inp.datatype, shape=[args.rows, width])
        t.contents.fp32_contents.extend(x)
        seen['contents'] = answer(stub.ModelInfer(contents, timeout=TIMEOUT_S))

        bad = pb.ModelInferRequest(model_name=args.model)
        bad.inputs.add(name=inp.name, datatype='FP64', shape=[1, width]).contents.fp64_contents.extend([0.0] * width)
        try:
            stub.ModelInfer(bad, timeout=TIMEOUT_S)
            seen['refused'] = None
        except grpc.RpcError as e:
            seen['refused'] = {'code': e.code().name, 'details': e.details()}

    print(json.dumps(seen))


if __name__ == '__main__':
    main()
