/* sim.h — `shade sim`: an OpenAI-compatible model server simulator. */
#ifndef SHADE_SIM_H
#define SHADE_SIM_H
int sim_main(int argc, char **argv); /* argv[0] is "sim" */
#endif
