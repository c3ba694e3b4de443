package wire

// ModulesOrderPath is where the agent's boot environment lists the kernel
// modules the agent loads at start, one absolute path per line,
// dependencies first. The builder (agent/bootenv) writes it and the agent
// reads it: one constant, here, for both.
const ModulesOrderPath = "/etc/metalhall/modules.order"
