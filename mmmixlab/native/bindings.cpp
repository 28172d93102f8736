// The compiled module's Python functions (mmmixlab.native.compiled()); each kernel's source says
// what it computes and why it is compiled.
#include <torch/python.h>  // lighter than torch/extension.h; the kernels include ATen only

#include <vector>

// tokenizer.cpp
std::vector<at::Tensor> tokenizer_forward(at::Tensor x, std::vector<at::Tensor> params,
                                          double eps);
std::vector<at::Tensor> tokenizer_backward(at::Tensor x, at::Tensor dtok, at::Tensor choice,
                                           std::vector<at::Tensor> params, double eps);
// attention.cpp
std::vector<at::Tensor> attention_forward(at::Tensor qkv, int64_t heads);
at::Tensor attention_backward(at::Tensor qkv, at::Tensor lse, at::Tensor dout,
                                 int64_t heads);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("tokenizer_forward", &tokenizer_forward,
        "fused tiny tokenizer forward (float32): (tokens, the max-pools' row choices)");
  m.def("tokenizer_backward", &tokenizer_backward,
        "fused tiny tokenizer parameter gradients, from the forward's choices");
  m.def("attention_forward", &attention_forward,
        "short-sequence multi-head attention from packed qkv: (out float32, row log-sum-exp)");
  m.def("attention_backward", &attention_backward,
        "the packed qkv's gradient, in qkv's dtype, from the output's float32 gradient");
}
