#include "autograd/module.h"

#include <algorithm>
#include <cmath>

#include "autograd/node.h"
#include "autograd/random.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/shape.h"

namespace hd {

Tensor Module::register_parameter(const std::string& name, const Shape& shape, Init init,
                                  DType dtype) {
  HD_CHECK(!name.empty() && name.find('.') == std::string::npos,
           "register_parameter: invalid name '", name, "' (non-empty, no dots)");
  for (const Param& p : params_) {
    HD_CHECK(p.name != name, "register_parameter: '", name, "' registered twice");
  }
  for (const auto& c : children_) {
    HD_CHECK(c.first != name, "register_parameter: '", name, "' is already a submodule");
  }
  Tensor t = zeros(shape, dtype);
  t.requires_grad_(true);
  t.set_name(name);
  params_.push_back({name, t, init});
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> child) {
  HD_CHECK(child != nullptr, "register_module: '", name, "' is null");
  HD_CHECK(!name.empty() && name.find('.') == std::string::npos, "register_module: invalid name '",
           name, "'");
  for (const auto& c : children_) {
    HD_CHECK(c.first != name, "register_module: '", name, "' registered twice");
  }
  children_.emplace_back(name, std::move(child));
}

void Module::collect(const std::string& prefix,
                     std::vector<std::pair<std::string, const Param*>>& out) const {
  for (const Param& p : params_) out.emplace_back(prefix + p.name, &p);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, const Param*>> all;
  collect("", all);
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(all.size());
  for (auto& [name, p] : all) {
    Tensor t = p->tensor;
    t.set_name(name);  // full name from here on, for error messages and hooks
    out.emplace_back(name, t);
  }
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, const Module*>> out{{"", this}};
  for (const auto& [name, child] : children_) {
    for (auto& [sub, m] : child->named_modules()) {
      out.emplace_back(sub.empty() ? name : name + "." + sub, m);
    }
  }
  return out;
}

Tensor Module::parameter(const std::string& name) const {
  std::string available;
  for (auto& [n, t] : named_parameters()) {
    if (n == name) return t;
    if (available.size() < 400) available += (available.empty() ? "" : ", ") + n;
  }
  throw Error(
      detail::concat("Module::parameter: no parameter named '", name, "'; available: ", available));
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::initialize(uint64_t seed) {
  std::vector<std::pair<std::string, const Param*>> all;
  collect("", all);
  NoGradGuard no_grad;
  for (auto& [name, p] : all) {
    Tensor t = p->tensor;
    Generator gen(seed, name);
    const Init& init = p->init;
    switch (init.kind) {
      case Init::Kind::zeros:
        fill_(t, 0.0);
        break;
      case Init::Kind::ones:
        fill_(t, 1.0);
        break;
      case Init::Kind::constant:
        fill_(t, init.a);
        break;
      case Init::Kind::normal:
        normal_(t, init.a, init.b, gen);
        break;
      case Init::Kind::uniform:
        uniform_(t, init.a, init.b, gen);
        break;
      case Init::Kind::trunc_normal: {
        // Redraw out-of-range values elementwise from later blocks of the same stream, so the
        // result is still a pure function of (seed, name).
        normal_(t, 0.0, 1.0, gen);
        std::vector<double> v = t.to_vector<double>();
        for (int round = 0; round < 64; ++round) {
          bool all_in = true;
          Tensor redraw = normal(t.shape(), 0.0, 1.0, gen, DType::f64);
          std::vector<double> r = redraw.to_vector<double>();
          for (size_t i = 0; i < v.size(); ++i) {
            if (std::abs(v[i]) > 2.0) {
              v[i] = r[i];
              all_in &= std::abs(v[i]) <= 2.0;
            }
          }
          if (all_in) break;
        }
        for (double& x : v) x = init.a + init.b * std::clamp(x, -2.0, 2.0);
        copy_(t, from_vector(v, t.shape(), DType::f64));
        break;
      }
    }
  }
}

void Module::zero_grad() {
  for (auto& [name, t] : named_parameters()) t.zero_grad();
}

void Module::to_(Device device, DType dtype) {
  for (auto& [name, t] : named_parameters()) {
    Tensor moved = contiguous(to(to(t.detach(), dtype), device));
    t.zero_grad();
    TensorImpl& impl = t.impl();
    impl.storage = moved.storage();
    impl.dtype = dtype;
    impl.strides = moved.strides();
    impl.offset = moved.offset();
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

}  // namespace hd
