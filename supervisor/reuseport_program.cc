#include "supervisor/reuseport_program.h"

namespace sb::supervisor {
namespace {

// The few encodings the program needs (the kernel's BPF_* macros from
// samples/bpf/bpf_insn.h, which <linux/bpf.h> does not ship).
bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst;
  i.src_reg = src;
  i.off = off;
  i.imm = imm;
  return i;
}

bpf_insn MovReg(uint8_t dst, uint8_t src) {
  return Insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
}
bpf_insn MovImm(uint8_t dst, int32_t imm) {
  return Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
}
bpf_insn AddImm(uint8_t dst, int32_t imm) {
  return Insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm);
}
bpf_insn Call(int32_t helper) { return Insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper); }
bpf_insn Exit() { return Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }

// A 64-bit immediate spans two instructions; src_reg BPF_PSEUDO_MAP_FD tells
// the verifier the immediate is a map fd to replace by the map's address.
void LoadMap(std::vector<bpf_insn>* p, uint8_t dst, int map_fd) {
  p->push_back(Insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, map_fd));
  p->push_back(Insn(0, 0, 0, 0, 0));
}

constexpr uint8_t kCtx = 6;         // callee-saved: survives the first helper call
constexpr int16_t kKeySlot = -4;    // u32 key 0 of the counter map, on the stack
constexpr int16_t kIndexSlot = -8;  // u32 index into the member map

}  // namespace

std::vector<bpf_insn> RoundRobinProgram(int counter_map_fd, int member_map_fd, uint32_t members) {
  std::vector<bpf_insn> p;
  p.push_back(MovReg(kCtx, BPF_REG_1));
  p.push_back(Insn(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, kKeySlot, 0));
  LoadMap(&p, BPF_REG_1, counter_map_fd);
  p.push_back(MovReg(BPF_REG_2, BPF_REG_10));
  p.push_back(AddImm(BPF_REG_2, kKeySlot));
  p.push_back(Call(BPF_FUNC_map_lookup_elem));
  // The verifier insists on the NULL check even for key 0 of an array.
  p.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 0, 2, 0));
  p.push_back(MovImm(BPF_REG_0, SK_PASS));
  p.push_back(Exit());
  // One atomic add, so SYNs handled on several CPUs at once never take the
  // same ticket; the counter wraps after 2^64 connections, harmlessly.
  p.push_back(MovImm(BPF_REG_1, 1));
  p.push_back(Insn(BPF_STX | BPF_DW | BPF_ATOMIC, BPF_REG_0, BPF_REG_1, 0, BPF_ADD | BPF_FETCH));
  p.push_back(Insn(BPF_ALU64 | BPF_MOD | BPF_K, BPF_REG_1, 0, 0, static_cast<int32_t>(members)));
  p.push_back(Insn(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_1, kIndexSlot, 0));
  p.push_back(MovReg(BPF_REG_1, kCtx));
  LoadMap(&p, BPF_REG_2, member_map_fd);
  p.push_back(MovReg(BPF_REG_3, BPF_REG_10));
  p.push_back(AddImm(BPF_REG_3, kIndexSlot));
  p.push_back(MovImm(BPF_REG_4, 0));
  p.push_back(Call(BPF_FUNC_sk_select_reuseport));
  p.push_back(MovImm(BPF_REG_0, SK_PASS));
  p.push_back(Exit());
  return p;
}

}  // namespace sb::supervisor
