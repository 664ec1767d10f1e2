"""``cupy.cuda.runtime`` of the stand-in: one device, properties named like CUDA's."""


def getDeviceCount():
    return 1


def getDeviceProperties(device):
    return {"name": b"CuPy stand-in (CPU)", "totalGlobalMem": 0}


def deviceSynchronize():
    pass


def runtimeGetVersion():
    return 12000
