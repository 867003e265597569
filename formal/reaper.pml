/*
 * reaper.pml - the Reaper of common.pml.  Include it after the workers'
 * proctypes, so that they get pids 0 .. N-1.
 */
/* Kill up to MAXDEAD workers, each between any two of its steps. */
active proctype Reaper()
{
    do
    :: ndead < MAXDEAD ->
        atomic {
            if
            :: ALIVE(0) -> kill(0)
            :: ALIVE(1) -> kill(1)
            :: ALIVE(2) -> kill(2)
            fi
        }
    :: break
    od
}
