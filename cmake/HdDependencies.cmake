# Finds every dependency hdtrain uses. A missing one stops configure with the Debian package
# that provides it, because "could not find X" alone leaves a new user guessing.

macro(hd_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR "hdtrain: ${what} not found. Install it with: apt-get install ${package}")
  endif()
endmacro()

# --- MPI (OpenMPI): collectives on host tensors and the NCCL bootstrap ---------------------
find_package(MPI COMPONENTS C CXX QUIET)
hd_require(MPI_CXX_FOUND "MPI (OpenMPI)" "libopenmpi-dev openmpi-bin")

# --- HDF5 (C API, serial): sharded checkpoints ---------------------------------------------
find_package(HDF5 COMPONENTS C QUIET)
hd_require(HDF5_FOUND "HDF5 (C API)" "libhdf5-dev")

# --- protobuf: run config and checkpoint manifest (FindProtobuf module; Debian ships no
#     protobuf-config.cmake, see build notes P7) --------------------------------------------
find_package(Protobuf QUIET)
hd_require(Protobuf_FOUND "protobuf" "libprotobuf-dev protobuf-compiler")
if(NOT Protobuf_PROTOC_EXECUTABLE)
  message(FATAL_ERROR "hdtrain: protoc not found. Install it with: apt-get install protobuf-compiler")
endif()

# --- Abseil (Debian 20220623: absl::string_view is not std::string_view, see P8) -----------
find_package(absl CONFIG QUIET)
hd_require(absl_FOUND "Abseil" "libabsl-dev")

# --- prometheus-cpp: metrics (core only in the trainer; see P1 on civetweb + cuBLAS) --------
find_package(prometheus-cpp CONFIG QUIET)
hd_require(prometheus-cpp_FOUND "prometheus-cpp" "prometheus-cpp-dev")

# --- OpenBLAS: CPU GEMM --------------------------------------------------------------------
set(BLA_VENDOR OpenBLAS)
find_package(BLAS QUIET)
hd_require(BLAS_FOUND "OpenBLAS" "libopenblas-dev")
find_path(HD_CBLAS_INCLUDE_DIR cblas.h PATHS /usr/include/x86_64-linux-gnu /usr/include/openblas
          /usr/include/aarch64-linux-gnu)
hd_require(HD_CBLAS_INCLUDE_DIR "cblas.h (OpenBLAS)" "libopenblas-dev")
add_library(hd_openblas INTERFACE)
target_link_libraries(hd_openblas INTERFACE ${BLAS_LIBRARIES})
target_include_directories(hd_openblas INTERFACE ${HD_CBLAS_INCLUDE_DIR})

# --- oneDNN: bf16 GEMMs on CPUs with bf16 arithmetic (ops/cpu/onednn_matmul.h) ---------------
# Found by header and library: Debian's dnnl-config.cmake requires the OpenCL development
# packages for its GPU runtime, which we never use. Debian's oneDNN runs on OpenMP (libgomp);
# we call omp_set_num_threads to match our pool.
find_path(HD_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
find_library(HD_DNNL_LIBRARY dnnl)
hd_require(HD_DNNL_INCLUDE_DIR "oneDNN headers (oneapi/dnnl/dnnl.hpp)" "libdnnl-dev")
hd_require(HD_DNNL_LIBRARY "oneDNN (libdnnl)" "libdnnl-dev")
find_library(HD_GOMP_LIBRARY NAMES gomp libgomp.so.1)
hd_require(HD_GOMP_LIBRARY "the GNU OpenMP runtime (libgomp)" "libgomp1")
add_library(hd_onednn INTERFACE)
target_link_libraries(hd_onednn INTERFACE ${HD_DNNL_LIBRARY} ${HD_GOMP_LIBRARY})
target_include_directories(hd_onednn INTERFACE ${HD_DNNL_INCLUDE_DIR})

# --- GoogleTest and Google Benchmark --------------------------------------------------------
if(HD_BUILD_TESTS)
  find_package(GTest CONFIG QUIET)
  hd_require(GTest_FOUND "GoogleTest" "libgtest-dev libgmock-dev")
endif()
if(HD_BUILD_BENCH)
  find_package(benchmark CONFIG QUIET)
  hd_require(benchmark_FOUND "Google Benchmark" "libbenchmark-dev")
endif()

# --- CUDA toolkit (cudart, cuBLAS/cuBLASLt, cuDNN, NCCL) behind HD_CUDA ----------------------
if(HD_CUDA)
  # A static cudart next to the shared one gives two runtimes (P4). CMake 3.25 cannot express
  # C++20 for nvcc (P3), and a -std=c++20 in CMAKE_CUDA_FLAGS at detection time makes it add
  # -std=c++17 to every CUDA compile; so the flag is added after detection, per language.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  add_compile_options($<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
  find_package(CUDAToolkit REQUIRED)
  set(_hd_cuda_libdir ${CUDAToolkit_LIBRARY_DIR})
  # No CMake package ships for cuDNN or NCCL in this toolkit layout (P5).
  find_path(HD_CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(HD_CUDNN_LIBRARY cudnn HINTS ${_hd_cuda_libdir})
  find_path(HD_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(HD_NCCL_LIBRARY nccl HINTS ${_hd_cuda_libdir})
  if(NOT TARGET CUDA::cublas OR NOT TARGET CUDA::cublasLt)
    message(FATAL_ERROR "hdtrain: cuBLAS/cuBLASLt not found in the CUDA toolkit at ${CUDAToolkit_LIBRARY_DIR}. "
                        "Install the CUDA toolkit (nvidia-cuda-toolkit or NVIDIA's cuda-toolkit) or configure with -DHD_CUDA=OFF")
  endif()
  if(NOT HD_CUDNN_LIBRARY OR NOT HD_CUDNN_INCLUDE_DIR)
    message(FATAL_ERROR "hdtrain: cuDNN not found next to the CUDA toolkit. Install nvidia-cudnn or configure with -DHD_CUDA=OFF")
  endif()
  if(NOT HD_NCCL_LIBRARY OR NOT HD_NCCL_INCLUDE_DIR)
    message(FATAL_ERROR "hdtrain: NCCL not found next to the CUDA toolkit. Install libnccl-dev or configure with -DHD_CUDA=OFF")
  endif()
  add_library(hd_cudnn UNKNOWN IMPORTED)
  set_target_properties(hd_cudnn PROPERTIES IMPORTED_LOCATION ${HD_CUDNN_LIBRARY}
                                            INTERFACE_INCLUDE_DIRECTORIES ${HD_CUDNN_INCLUDE_DIR})
  add_library(hd_nccl UNKNOWN IMPORTED)
  set_target_properties(hd_nccl PROPERTIES IMPORTED_LOCATION ${HD_NCCL_LIBRARY}
                                           INTERFACE_INCLUDE_DIRECTORIES ${HD_NCCL_INCLUDE_DIR})
  message(STATUS "hdtrain: CUDA ${CUDAToolkit_VERSION}, arches ${CMAKE_CUDA_ARCHITECTURES}, "
                 "cuDNN ${HD_CUDNN_LIBRARY}, NCCL ${HD_NCCL_LIBRARY}")
endif()
