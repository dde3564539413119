#include "supervisor/reuseport_program.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sb::supervisor {
namespace {

constexpr int kCounterFd = 7;
constexpr int kMemberFd = 9;

// Runs a program the way the kernel would for the few opcodes it may use,
// with the two helpers faked: map_lookup_elem finds the counter map's one
// slot (unless `counter_missing`), sk_select_reuseport records the index.
// Any other opcode, helper or out-of-range access fails the test, and r1-r5
// hold poison after a call (the kernel clobbers them), so a program that
// relied on them would select a wrong member here.
class Interpreter {
 public:
  uint64_t counter = 0;
  bool counter_missing = false;
  std::optional<uint32_t> selected;
  int selected_map = -1;
  std::string error;

  // Returns r0 at exit.
  uint64_t Run(const std::vector<bpf_insn>& prog) {
    selected.reset();
    std::array<uint64_t, 11> r{};
    r[1] = kCtx;
    r[10] = kStackTop;
    for (size_t pc = 0; pc < prog.size(); ++pc) {
      const bpf_insn& i = prog[pc];
      switch (i.code) {
        case BPF_ALU64 | BPF_MOV | BPF_X:
          r[i.dst_reg] = r[i.src_reg];
          break;
        case BPF_ALU64 | BPF_MOV | BPF_K:
          r[i.dst_reg] = static_cast<uint64_t>(static_cast<int64_t>(i.imm));
          break;
        case BPF_ALU64 | BPF_ADD | BPF_K:
          r[i.dst_reg] += static_cast<uint64_t>(static_cast<int64_t>(i.imm));
          break;
        case BPF_ALU64 | BPF_MOD | BPF_K:
          if (i.imm <= 0) return Fail("mod by a non-positive immediate");
          r[i.dst_reg] %= static_cast<uint64_t>(i.imm);
          break;
        case BPF_ST | BPF_MEM | BPF_W:
          if (!Store32(r[i.dst_reg] + i.off, static_cast<uint32_t>(i.imm))) return Fail("st");
          break;
        case BPF_STX | BPF_MEM | BPF_W:
          if (!Store32(r[i.dst_reg] + i.off, static_cast<uint32_t>(r[i.src_reg])))
            return Fail("stx");
          break;
        case BPF_STX | BPF_DW | BPF_ATOMIC:
          if (i.imm != (BPF_ADD | BPF_FETCH) || r[i.dst_reg] + i.off != kCounterAddr) {
            return Fail("atomic other than fetch-add on the counter");
          }
          std::swap(r[i.src_reg], counter);
          counter += r[i.src_reg];
          break;
        case BPF_LD | BPF_DW | BPF_IMM:
          if (i.src_reg != BPF_PSEUDO_MAP_FD || pc + 1 >= prog.size()) return Fail("ld_imm64");
          r[i.dst_reg] = kMapTag | static_cast<uint32_t>(i.imm);
          ++pc;
          break;
        case BPF_JMP | BPF_JNE | BPF_K:
          if (r[i.dst_reg] != static_cast<uint64_t>(static_cast<int64_t>(i.imm))) pc += i.off;
          break;
        case BPF_JMP | BPF_CALL:
          r[0] = Helper(i.imm, r);
          if (!error.empty()) return 0;
          for (int k = 1; k <= 5; ++k) r[k] = 0xdeadbeef;
          break;
        case BPF_JMP | BPF_EXIT:
          return r[0];
        default:
          return Fail("opcode " + std::to_string(i.code));
      }
      if (pc + 1 > prog.size()) return Fail("jump out of the program");
    }
    return Fail("fell off the end");
  }

 private:
  static constexpr uint64_t kCtx = 0xc0111;
  static constexpr uint64_t kStackTop = 0x1000;
  static constexpr uint64_t kCounterAddr = 0x5000;
  static constexpr uint64_t kMapTag = uint64_t{1} << 40;

  uint64_t Fail(const std::string& what) {
    if (error.empty()) error = what;
    return 0;
  }
  bool Store32(uint64_t addr, uint32_t v) {
    if (addr < kStackTop - stack_.size() || addr + 4 > kStackTop) return false;
    std::memcpy(&stack_[addr - (kStackTop - stack_.size())], &v, 4);
    return true;
  }
  std::optional<uint32_t> Load32(uint64_t addr) const {
    if (addr < kStackTop - stack_.size() || addr + 4 > kStackTop) return std::nullopt;
    uint32_t v;
    std::memcpy(&v, &stack_[addr - (kStackTop - stack_.size())], 4);
    return v;
  }
  uint64_t Helper(int32_t id, const std::array<uint64_t, 11>& r) {
    if (id == BPF_FUNC_map_lookup_elem) {
      std::optional<uint32_t> key = Load32(r[2]);
      if (r[1] != (kMapTag | kCounterFd) || key != 0u) return Fail("lookup: wrong map or key");
      return counter_missing ? 0 : kCounterAddr;
    }
    if (id == BPF_FUNC_sk_select_reuseport) {
      std::optional<uint32_t> key = Load32(r[3]);
      if (r[1] != kCtx || !key || r[4] != 0) return Fail("select: wrong ctx, key or flags");
      selected = *key;
      selected_map = static_cast<int>(r[2] & ~kMapTag);
      return 0;
    }
    return Fail("helper " + std::to_string(id));
  }

  std::array<uint8_t, 512> stack_{};
};

TEST(ReuseportProgramTest, PicksMembersInTurn) {
  const std::vector<bpf_insn> prog = RoundRobinProgram(kCounterFd, kMemberFd, 4);
  Interpreter vm;
  std::map<uint32_t, int> counts;
  for (uint32_t n = 0; n < 1000; ++n) {
    ASSERT_EQ(vm.Run(prog), static_cast<uint64_t>(SK_PASS)) << vm.error;
    ASSERT_TRUE(vm.error.empty()) << vm.error;
    ASSERT_EQ(vm.selected, n % 4);
    EXPECT_EQ(vm.selected_map, kMemberFd);
    ++counts[*vm.selected];
  }
  EXPECT_EQ(counts, (std::map<uint32_t, int>{{0, 250}, {1, 250}, {2, 250}, {3, 250}}));
  EXPECT_EQ(vm.counter, 1000u);
}

TEST(ReuseportProgramTest, KeepsCountingAcrossAMemberCountChange) {
  // A reload that scales the set loads a new program over the same counter.
  Interpreter vm;
  vm.counter = 10;
  ASSERT_EQ(vm.Run(RoundRobinProgram(kCounterFd, kMemberFd, 3)), static_cast<uint64_t>(SK_PASS));
  EXPECT_EQ(vm.selected, 1u);
  ASSERT_EQ(vm.Run(RoundRobinProgram(kCounterFd, kMemberFd, 1)), static_cast<uint64_t>(SK_PASS));
  EXPECT_EQ(vm.selected, 0u);
  EXPECT_EQ(vm.counter, 12u);
  EXPECT_TRUE(vm.error.empty()) << vm.error;
}

TEST(ReuseportProgramTest, WithoutTheCounterItPassesAndSelectsNothing) {
  Interpreter vm;
  vm.counter_missing = true;
  EXPECT_EQ(vm.Run(RoundRobinProgram(kCounterFd, kMemberFd, 2)), static_cast<uint64_t>(SK_PASS));
  EXPECT_TRUE(vm.error.empty()) << vm.error;
  EXPECT_FALSE(vm.selected.has_value());
}

TEST(ReuseportProgramTest, JumpsStayInsideAndItEndsInExit) {
  const std::vector<bpf_insn> prog = RoundRobinProgram(kCounterFd, kMemberFd, 2);
  ASSERT_FALSE(prog.empty());
  EXPECT_EQ(prog.back().code, BPF_JMP | BPF_EXIT);
  for (size_t pc = 0; pc < prog.size(); ++pc) {
    if (BPF_CLASS(prog[pc].code) == BPF_JMP && BPF_OP(prog[pc].code) == BPF_JNE) {
      const long target = static_cast<long>(pc) + 1 + prog[pc].off;
      EXPECT_GE(target, 0);
      EXPECT_LT(target, static_cast<long>(prog.size()));
    }
  }
}

}  // namespace
}  // namespace sb::supervisor
